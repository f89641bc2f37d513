"""Driver side: the parameter server, pre-launch checks and the Spark job that runs the workers."""
