from curriculum.cli import main

main(prog_name="python -m curriculum")
