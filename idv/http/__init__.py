"""The device endpoint (issue 13): the capture page and the one upload of a verification session."""
