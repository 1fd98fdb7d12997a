"""SSH transport: one kept-open asyncssh connection per node running the node agent."""
