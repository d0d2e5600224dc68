"""The signaling service.

WebSocket endpoint for browsers: waiting rooms, admissions, presence, host controls."""
