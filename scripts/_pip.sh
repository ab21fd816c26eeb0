# Sourced by scripts/test.sh and scripts/demo.sh: `pip_install PYTHON ARGS...` runs a quiet pip
# install, keeps its exit status, and drops pip's warnings about index locations configured on
# the machine that do not exist (noise, not errors).
pip_install() {
    local py="$1"
    shift
    "$py" -m pip install --quiet --disable-pip-version-check "$@" \
        2> >(grep -v "is neither a file nor a directory" >&2)
}
