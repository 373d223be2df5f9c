from llamapin.cli import main

main()
