"""Run the taskexec command line as `python -m supervisor`."""

from supervisor.cli import main

main()
