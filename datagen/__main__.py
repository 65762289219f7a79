from datagen.cli import main

main(prog_name="datagen")
