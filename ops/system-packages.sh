# Sourced by ops/test.sh: the Debian packages the test suite needs beyond Python (a real
# browser for the console's tests, a real IMAP server for the mail intake's), one per
# line in ops/system-packages.txt ('#' comments).  Installs only what is missing, with
# apt-get (as root, else through sudo); says what to install by hand when it cannot.
set -euo pipefail
want=()
while read -r pkg _; do
  [ -z "${pkg:-}" ] || [ "${pkg:0:1}" = "#" ] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || want+=("$pkg")
done < ops/system-packages.txt
if [ "${#want[@]}" -gt 0 ]; then
  echo "tagus: installing Debian packages for the tests: ${want[*]}" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "tagus: need root or sudo to install ${want[*]} (apt-get install ${want[*]})" >&2; exit 2; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null || true
  $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null || {
    echo "tagus: apt-get could not install ${want[*]}; install them by hand" >&2; exit 2; }
fi
