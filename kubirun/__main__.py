"""``python -m kubirun`` runs the command line."""
from kubirun.cli import main

main()
