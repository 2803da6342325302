#!/usr/bin/env bash
# Print the path of a Python >= 3.12 that can create virtualenvs, or explain what is missing.
# Order: python3.13, python3.12, python3, then pyenv's installed versions (newest first).
set -u

candidates=(python3.13 python3.12 python3)
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null)
  for dir in $(ls -d "$root"/versions/3.1[2-9]* 2>/dev/null | sort -rV); do
    for exe in "$dir"/bin/python3.1[2-9]; do
      [ -x "$exe" ] && candidates+=("$exe")
    done
  done
fi

too_old=()
no_venv=()
for candidate in "${candidates[@]}"; do
  exe=$(command -v "$candidate" 2>/dev/null) || continue
  # pyenv shims exist for versions that are not selected: run it to be sure.
  version=$("$exe" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
  if ! "$exe" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    too_old+=("$exe ($version)")
    continue
  fi
  if ! "$exe" -c 'import venv, ensurepip' 2>/dev/null; then
    no_venv+=("$exe ($version)")
    continue
  fi
  echo "$exe"
  exit 0
done

{
  echo "error: no Python >= 3.12 with a working venv module was found."
  [ ${#too_old[@]} -gt 0 ] && echo "  too old: ${too_old[*]}"
  if [ ${#no_venv[@]} -gt 0 ]; then
    echo "  without venv/ensurepip: ${no_venv[*]}"
    echo "  On Debian, install it with: apt-get install python3-venv"
  fi
  echo "  Install Python 3.12+ (Debian 13: apt-get install python3 python3-venv;"
  echo "  elsewhere: pyenv install 3.13) and run this again."
} >&2
exit 1
