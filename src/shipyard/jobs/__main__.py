from ._child import main

main()
