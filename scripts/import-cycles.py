#!/usr/bin/env python3
"""Report import cycles between the modules of a crate's src/ tree.

    scripts/import-cycles.py src crates/dosetrack-core/src

A module is a file (`a/b.rs` or `a/b/mod.rs` is module `a::b`). An edge
`m -> n` is a path `crate::n::...`, `super::...` or `self::...` in `m`
(`use` or inline) that names module `n` or an item defined in `n`'s own file.
A module's `mod` declarations are not edges; a parent using its child is.
Test modules (`tests.rs`, `tests/`) are skipped. Prints each strongly
connected component of two or more modules and exits 1 if there is any.
"""
import os, re, sys

def modules(root):
    mods = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith('.rs'):
                continue
            rel = os.path.relpath(os.path.join(dp, f), root)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib', 'main'):
                rel = rel[:-1]
            if 'tests' in rel:
                continue
            mods[tuple(rel)] = os.path.join(dp, f)
    return mods

PATH = re.compile(r'\b(crate|super|self)((?:::\w+)+)')
GROUP = re.compile(r'\b(crate|super|self)((?:::\w+)*)::\{([^;]*?)\};', re.S)

def strip_tests(src):
    # drop `#[cfg(test)] mod tests { ... }` blocks (brace-matched)
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*mod\s+\w+\s*\{', src):
        if m.start() < i:
            continue
        out.append(src[i:m.start()])
        depth, j = 1, m.end()
        while j < len(src) and depth:
            depth += {'{': 1, '}': -1}.get(src[j], 0)
            j += 1
        i = j
    out.append(src[i:])
    return ''.join(out)

def resolve(mods, base, parts):
    """Deepest module that is a prefix of base+parts."""
    full = list(base) + parts
    for k in range(len(full), -1, -1):
        if tuple(full[:k]) in mods:
            return tuple(full[:k])
    return ()

def main():
    bad = False
    for root in sys.argv[1:]:
        mods = modules(root)
        edges = {m: set() for m in mods}
        for m, path in mods.items():
            src = strip_tests(open(path).read())
            src = re.sub(r'//.*', '', src)
            # a file `a/b.rs` or `a/b/mod.rs` is module a::b; `super` is a
            paths = []
            for g in GROUP.finditer(src):
                for item in re.split(r',', g.group(3)):
                    item = item.strip().split(' as ')[0]
                    if item and item != 'self':
                        paths.append((g.group(1), g.group(2) + '::' + item.split('::')[0]))
                    elif item == 'self':
                        paths.append((g.group(1), g.group(2)))
            paths += [(a, b) for a, b in PATH.findall(src)]
            # a child module named by a relative path (`stage_b::rebuild`)
            for child in set(re.findall(r'(?<![:\w])(\w+)::', src)):
                if m + (child,) in mods:
                    paths.append(('self', '::' + child))
            for kw, rest in paths:
                parts = [p for p in rest.split('::') if p]
                if kw == 'crate':
                    base = ()
                elif kw == 'self':
                    base = m
                else:
                    base = m[:-1]
                    while parts and parts[0] == 'super':
                        base, parts = base[:-1], parts[1:]
                n = resolve(mods, base, parts)
                if n != m:
                    edges[m].add(n)
        # Siblings: collapse each subtree to its top below the common parent.
        # A child naming its ancestor (the facade's shared types, or the
        # crate root's re-exports) and a parent naming its child (the facade
        # re-exporting it) are not edges; sibling subtrees naming each other
        # are, and must not form a cycle.
        sib = {}
        for a, outs in edges.items():
            for b in outs:
                k = 0
                while k < min(len(a), len(b)) and a[k] == b[k]:
                    k += 1
                if k == len(a) or k == len(b):
                    continue  # ancestor or descendant
                sib.setdefault(a[:k + 1], set()).add(b[:k + 1])
        edges = {m: set() for m in mods}
        for a, outs in sib.items():
            edges.setdefault(a, set()).update(outs)
            for b in outs:
                edges.setdefault(b, set())
        # Tarjan
        index, low, stack, on, sccs, c = {}, {}, [], set(), [], [0]
        def visit(v):
            index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
            for w in edges[v]:
                if w not in index:
                    visit(w); low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(comp)
        sys.setrecursionlimit(10000)
        for v in mods:
            if v not in index:
                visit(v)
        name = lambda t: '::'.join(t) or 'crate'
        for comp in sccs:
            bad = True
            print(f'{root}: cycle: ' + ', '.join(sorted(map(name, comp))))
            for a in comp:
                for b in edges[a]:
                    if b in comp:
                        print(f'    {name(a)} -> {name(b)}')
        print(f'{root}: {len(mods)} modules, {sum(map(len, edges.values()))} edges, {len(sccs)} cycles')
    sys.exit(1 if bad else 0)

main()
