from citypilot.cli.main import run

run()
