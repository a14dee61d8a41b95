#!/bin/bash
# clear_of_midnight.sh SECONDS: wait for midnight UTC if it comes within
# SECONDS.  Tests work out "today" more than once (to make a day's
# partition, then to load into it or to list the days); a suite that ran
# across midnight would see two different days.  run-all.sh calls this
# before each suite with about twice the suite's running time.
: "${1:?usage: clear_of_midnight.sh SECONDS}"
left=$(( 86400 - $(date -u +%s) % 86400 ))
if [ "$left" -lt "$1" ]; then
    echo "waiting ${left} s for midnight UTC, so that the suite runs within one day"
    sleep $(( left + 2 ))
fi
