from atex_ci.cli import main

main()
