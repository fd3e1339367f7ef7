"""The in-browser voice tester: talk tokens, WebRTC signaling and the tester page."""
