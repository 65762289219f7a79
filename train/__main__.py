from train.cli import main

main(prog_name="python -m train")
