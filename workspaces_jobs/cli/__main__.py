from workspaces_jobs.cli import main

main()
