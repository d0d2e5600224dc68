"""The reference web client: join pages, the host's call manager and the demo console.

Plain HTML, CSS and JavaScript modules served as they are (no build step), talking to the
signaling service's WebSocket for everything a call needs. Integrators attach their own
front ends the same way; this one is how the platform is tried and tested end to end.
"""
