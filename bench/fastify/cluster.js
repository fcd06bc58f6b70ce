'use strict';
// proxy.js under node's cluster module (../node-cluster.js).
require('../node-cluster.js')('fastify', require.resolve('./proxy.js'));
