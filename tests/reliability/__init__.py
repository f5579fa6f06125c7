"""The fault suite: real components on loopback, each fault ends in the right bytes or a clear error."""
