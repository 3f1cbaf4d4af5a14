# Sourced by scripts/test.sh and scripts/storm.sh (from the repository's
# root): the Python virtual environment with the packages the tests'
# fixtures are built with (tests/requirements.txt), in target/pyenv;
# exports TOLLGATE_PYTHON.
venv=target/pyenv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
export TOLLGATE_PYTHON="$PWD/$venv/bin/python"
