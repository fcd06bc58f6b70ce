"""Upgrade tunnels (WebSocket) for the routes that allow them: settings and the stage."""
