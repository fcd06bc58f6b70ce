"""The server side of the wire: gunicorn worker classes, the HTTP/1.1 server, the arbiter that
drains on reload, and in-flight accounting."""
