"""The client side of the wire: compiled upstream specs, the connection pool, gw's HTTP/1.1
framing (``wire``), TLS, and the client that sends a request to a chosen target."""
