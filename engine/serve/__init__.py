"""A run's engine process and its clients: the socket server, the client, launching a detached
engine, and the headless progress printer."""
