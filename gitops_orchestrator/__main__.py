from gitops_orchestrator.cli import main

main()
