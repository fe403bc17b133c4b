# Sourced by the benchmark scripts: the arithmetic they all report with.

# median of numbers on stdin, one per line
median() { sort -g | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# seconds between two `date +%s%N` readings, 3 decimals
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f\n", (b-a)/1e9}'; }
