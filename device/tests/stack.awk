# Peak stack of entry points from gcc's -fcallgraph-info=su files (.ci, with -fstack-usage's frame sizes): the
# largest sum of frames along any call path. Calls through function pointers (the callbacks) and into code not
# compiled here (libc) count 0 and are listed. Usage: awk -v roots=f,g -f stack.awk *.ci
function field(name,   s, i) {
    s = $0
    i = index(s, name ": \"")
    if (!i) return ""
    s = substr(s, i + length(name) + 3)
    return substr(s, 1, index(s, "\"") - 1)
}
function short(f) { sub(/^.*:/, "", f); return f }
function peak(f,   best, i, v) {
    if (f in memo) return memo[f]
    if (f in active) { recursion = recursion " " short(f); return 0 }
    active[f] = 1
    best = 0
    for (i = 1; i <= calls[f]; i++) {
        v = peak(callee[f, i])
        if (v > best) { best = v; via[f] = callee[f, i] }
    }
    delete active[f]
    memo[f] = frame[f] + best
    return memo[f]
}
/^node:/ {
    t = field("title"); l = field("label")
    if (match(l, /[0-9]+ bytes/)) { s = substr(l, RSTART, RLENGTH); sub(/ bytes/, "", s); frame[t] = s + 0; defined[t] = 1 }
}
/^edge:/ { a = field("sourcename"); b = field("targetname"); calls[a]++; callee[a, calls[a]] = b }
END {
    n = split(roots, r, ",")
    for (k = 1; k <= n; k++) {
        p = peak(r[k]); path = short(r[k]); f = r[k]
        while (f in via) { f = via[f]; path = path " > " short(f) "(" (f in defined ? frame[f] : "ext") ")" }
        printf "  %-28s %6d B  %s\n", r[k], p, path
    }
    for (f in calls) for (i = 1; i <= calls[f]; i++) { g = callee[f, i]; if (!(g in defined)) ext[short(g)] = 1 }
    list = ""
    for (g in ext) list = list " " g
    print "  not counted (callbacks, libc):" list
    if (recursion != "") print "  RECURSION:" recursion
}
