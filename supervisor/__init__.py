"""taskexec supervisor side: the command line and the parent process that forks workers."""
