"""Where events leave over the network: the WebSocket server, its handshake,
subscribers (hub and relay) and systemd notification."""
