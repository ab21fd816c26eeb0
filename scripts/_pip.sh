# Sourced by scripts/test.sh and scripts/demo.sh: `pip_install PYTHON ARGS...` runs a quiet pip
# install, keeps its exit status, and drops pip's warnings about index locations configured on
# the machine that do not exist (noise, not errors). `require_python PYTHON WHAT` stops with
# "bookrec needs Python >= 3.11" unless PYTHON is an interpreter of at least that version (the
# lock files pin packages that older Pythons cannot install, and pip would only say "No matching
# distribution found").
pip_install() {
    local py="$1"
    shift
    "$py" -m pip install --quiet --disable-pip-version-check "$@" \
        2> >(grep -v "is neither a file nor a directory" >&2)
}

require_python() {
    local py="$1" what="$2" version
    if ! version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
        echo "bookrec needs Python >= 3.11; $what ($py) does not run." \
            "Set PYTHON to a Python 3.11+ interpreter, e.g. PYTHON=python3.12 $0" >&2
        exit 1
    fi
    local major="${version%%.*}" minor="${version#*.}"
    if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] \
        || ((major < 3 || (major == 3 && minor < 11))); then
        echo "bookrec needs Python >= 3.11; $what ($py) is Python $version." \
            "Set PYTHON to a Python 3.11+ interpreter, e.g. PYTHON=python3.12 $0" >&2
        exit 1
    fi
}
