from kfops.cli import main

main()
