# Sourced by the scripts of the README: create .venv if needed, install citypilot in it, activate it.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e .
