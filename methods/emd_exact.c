/*
 * emd_exact.c -- batched exact solver of small balanced transportation problems (EMD).
 *
 * Compiled on first use by methods/emd_exact.py (cc -O3 ... -shared -fPIC) and called through
 * ctypes. One problem:  min sum_ab flow_ab cost_ab  s.t. row sums = w1, column sums = w2,
 * flow >= 0, with a dummy node absorbing the gap when sum(w1) != sum(w2) (see quantise()).
 *
 * Algorithm: primal network simplex on the bipartite graph supplies -> demands.
 *  - Masses are quantised to integers (fixed point, 2^-50 of the larger total) so that flows are
 *    exact: a flow is either exactly zero or not, which the anti-cycling rule relies on.
 *  - Initial basis: greedy "least cost" allocation (cells in increasing cost order, by 256
 *    buckets), with ties broken lexicographically as in the perturbed problem (every non-root
 *    node sends epsilon to a root demand node). The resulting spanning tree is strongly feasible.
 *  - Strongly feasible trees (Cunningham 1976): every basic arc with zero flow points towards
 *    the root. The leaving arc is the last blocking arc met when walking the pivot cycle along
 *    the entering arc's orientation from the apex; this keeps the tree strongly feasible and
 *    rules out cycling on degenerate problems (equal weights, ties, integer costs).
 *  - Pricing: block search over rows of reduced costs, starting where the last search stopped;
 *    each row's minimum is a plain (vectorised, with the finite-math flags) reduction.
 *  - Potentials (u for rows, v for columns, u_a + v_b = c_ab on tree arcs) are kept signed,
 *    q = u on rows and q = -v on columns (a tree arc: q_a - q_b = c_ab), so that a pivot moves
 *    the re-hung subtree's potentials all by one number, the entering arc's reduced cost; they
 *    are recomputed from the tree at the end to shed the drift of these updates.
 *  - The apex of a pivot cycle is found by walking up from both ends of the entering arc at
 *    once, marking the nodes passed (no depths to maintain).
 *
 * Nodes 0..ns-1 are the active supplies (rows), ns..ns+nd-1 the active demands (columns);
 * zero-mass nodes are left out of the tree (their duals are set afterwards).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EMD_OK 0
#define EMD_ERR_ITER 1     /* pivot limit reached (should never happen) */
#define EMD_ERR_INIT 2     /* initial tree not strongly feasible (should never happen) */
#define EMD_ERR_NOMEM 3

#define MASS_BITS 50       /* quantum = 2^-MASS_BITS of the larger total mass */

typedef struct {
    /* problem: active nodes, local dense costs, quantised masses */
    int ns, nd, dummy;         /* dummy: 0 none, 1 last supply, 2 last demand */
    int *orig;                 /* node -> row / column index in the input, -1 for the dummy */
    double *C;                 /* ns x nd costs, row-major */
    int64_t *mass;
    /* spanning tree: parent pointers plus doubly linked child lists */
    int *parent, *first, *next, *prev, *mark, *stack;
    int *path, *pos;           /* a pivot's two paths to the apex (k's, then l's at path + N), positions */
    int stamp;                 /* marks of the current apex search: stamp (k's side), stamp + 1 */
    int64_t *flow;             /* flow on the arc joining a node to its parent */
    double *pot;               /* signed potentials q (u on rows, -v on columns); u, v at the end */
    /* initial basis */
    int64_t *rem;
    int *rem_eps;
    char *alive;
    int *arc_a, *arc_b, *adj_start, *adj;
    int64_t *arc_f;
    int *order, *order_col;    /* cells in cost order: row, column (no division to split an index) */
    uint8_t *keys;             /* cost bucket of each cell (sort_cells) */
    long pivots;
    double cmax;               /* largest |cost| (tolerance scale) */
} Work;

/* ---------------------------------------------------------------- workspace */

static void work_free(Work *W) {
    free(W->orig); free(W->C); free(W->mass); free(W->parent); free(W->first); free(W->next);
    free(W->prev); free(W->mark); free(W->path); free(W->pos); free(W->stack); free(W->flow); free(W->pot); free(W->rem);
    free(W->rem_eps); free(W->alive); free(W->arc_a); free(W->arc_b); free(W->adj_start);
    free(W->adj); free(W->arc_f); free(W->order); free(W->order_col); free(W->keys);
}

static int work_alloc(Work *W, int n, int m) {
    size_t N = (size_t)n + m + 2, cells = ((size_t)n + 1) * ((size_t)m + 1);
    memset(W, 0, sizeof(*W));
    W->orig = malloc(N * sizeof(int)); W->C = malloc(cells * sizeof(double));
    W->mass = malloc(N * sizeof(int64_t)); W->parent = malloc(N * sizeof(int));
    W->first = malloc(N * sizeof(int)); W->next = malloc(N * sizeof(int));
    W->prev = malloc(N * sizeof(int)); W->mark = malloc(N * sizeof(int));
    W->path = malloc(2 * N * sizeof(int)); W->pos = malloc(N * sizeof(int));
    W->stack = malloc(N * sizeof(int)); W->flow = malloc(N * sizeof(int64_t));
    W->pot = malloc(N * sizeof(double)); W->rem = malloc(N * sizeof(int64_t));
    W->rem_eps = malloc(N * sizeof(int)); W->alive = malloc(N);
    W->arc_a = malloc(N * sizeof(int)); W->arc_b = malloc(N * sizeof(int));
    W->arc_f = malloc(N * sizeof(int64_t)); W->adj_start = malloc((N + 1) * sizeof(int));
    W->adj = malloc(2 * N * sizeof(int)); W->order = malloc(cells * sizeof(int));
    W->order_col = malloc(cells * sizeof(int));
    W->keys = malloc(cells);
    if (!W->orig || !W->C || !W->mass || !W->parent || !W->first || !W->next || !W->prev ||
        !W->mark || !W->path || !W->pos || !W->stack || !W->flow || !W->pot || !W->rem || !W->rem_eps || !W->alive ||
        !W->arc_a || !W->arc_b || !W->arc_f || !W->adj_start || !W->adj || !W->order || !W->order_col ||
        !W->keys) {
        work_free(W);
        return EMD_ERR_NOMEM;
    }
    return EMD_OK;
}

/* ---------------------------------------------------------------- set-up */

/* A problem's costs as the caller passed them, float64 or float32 (read in place, widened
 * value by value: float32 problems are not copied into a float64 matrix first). */
typedef struct {
    const void *data;
    int single;
} Costs;

static inline double cost_at(Costs c, size_t i) {
    return c.single ? (double)((const float *)c.data)[i] : ((const double *)c.data)[i];
}

/* Quantise the masses to integers and list the active (positive-mass) nodes. Integer flows
 * make "zero flow" exact, which the strongly-feasible rule needs. If the quantised totals
 * differ (float rounding of the caller's normalisation), a dummy node with zero costs takes the
 * difference on the smaller side, i.e. only the smaller total is transported (as cv2.EMD).
 * Returns the scale (masses = weights * scale). */
static double quantise(Work *W, const double *w1, const double *w2, int n, int m) {
    double s1 = 0, s2 = 0;
    int ns = 0, nd = 0, e;
    int64_t t1 = 0, t2 = 0;
    for (int a = 0; a < n; a++) s1 += w1[a];
    for (int b = 0; b < m; b++) s2 += w2[b];
    double top = s1 > s2 ? s1 : s2;
    if (!(top > 0)) { W->ns = W->nd = 0; return 1.0; }
    frexp(top, &e);                                   /* top < 2^e */
    double scale = ldexp(1.0, MASS_BITS - e);        /* power of two: q / scale is exact */
    /* rows first, then columns; the columns are shifted in place after counting rows */
    int64_t *qs = W->rem;                            /* scratch */
    int *cols = W->stack;                            /* scratch */
    for (int a = 0; a < n; a++) {
        int64_t q = llround(w1[a] * scale);
        if (q > 0) { W->orig[ns] = a; W->mass[ns] = q; ns++; t1 += q; }
    }
    for (int b = 0; b < m; b++) {
        int64_t q = llround(w2[b] * scale);
        if (q > 0) { cols[nd] = b; qs[nd] = q; nd++; t2 += q; }
    }
    W->dummy = 0;
    if (t1 < t2) { W->orig[ns] = -1; W->mass[ns] = t2 - t1; ns++; W->dummy = 1; }
    for (int b = 0; b < nd; b++) { W->orig[ns + b] = cols[b]; W->mass[ns + b] = qs[b]; }
    if (t1 > t2) { W->orig[ns + nd] = -1; W->mass[ns + nd] = t1 - t2; nd++; W->dummy = 2; }
    W->ns = ns; W->nd = nd;
    return scale;
}

/* Local dense cost matrix of the active nodes; dummy cells cost 0. */
static void gather_costs(Work *W, Costs cost, int m) {
    int ns = W->ns, nd = W->nd;
    const int *col = W->orig + ns;
    for (int a = 0; a < ns; a++) {
        int ra = W->orig[a];
        double *row = W->C + (size_t)a * nd;
        if (ra < 0) { memset(row, 0, nd * sizeof(double)); continue; }
        if (cost.single) {
            const float *src = (const float *)cost.data + (size_t)ra * m;
            for (int b = 0; b < nd; b++) row[b] = col[b] < 0 ? 0.0 : (double)src[col[b]];
        } else {
            const double *src = (const double *)cost.data + (size_t)ra * m;
            for (int b = 0; b < nd; b++) row[b] = col[b] < 0 ? 0.0 : src[col[b]];
        }
    }
}

/* Cells in roughly increasing cost order: one counting pass over 256 cost buckets (cells of a
 * bucket keep their index order). The order only steers the heuristic, so this is enough. */
static void sort_cells(Work *W) {
    int cells = W->ns * W->nd;
    double lo = W->C[0], hi = W->C[0];
    for (int i = 1; i < cells; i++) {
        double c = W->C[i];
        lo = c < lo ? c : lo; hi = c > hi ? c : hi;
    }
    double f = hi > lo ? 255.999 / (hi - lo) : 0.0;
    int count[257];
    memset(count, 0, sizeof(count));
    for (int i = 0; i < cells; i++) { W->keys[i] = (uint8_t)((W->C[i] - lo) * f); count[W->keys[i] + 1]++; }
    for (int d = 0; d < 256; d++) count[d + 1] += count[d];
    for (int a = 0, i = 0; a < W->ns; a++)
        for (int b = 0; b < W->nd; b++, i++) {
            int d = count[W->keys[i]]++;
            W->order[d] = a; W->order_col[d] = b;
        }
    W->cmax = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
}

/* ---------------------------------------------------------------- tree helpers */

static inline void tree_unlink(Work *W, int x) {
    int p = W->parent[x], pr = W->prev[x], nx = W->next[x];
    if (pr >= 0) W->next[pr] = nx; else W->first[p] = nx;
    if (nx >= 0) W->prev[nx] = pr;
}

static inline void tree_link(Work *W, int p, int x) {
    int h = W->first[p];
    W->parent[x] = p; W->prev[x] = -1; W->next[x] = h;
    if (h >= 0) W->prev[h] = x;
    W->first[p] = x;
}

/* Signed potential of node x from its parent p's, the arc x-p being tight: q_row - q_col = c. */
static inline double tree_potential(const Work *W, int x, int p) {
    int ns = W->ns;
    return x < ns ? W->pot[p] + W->C[(size_t)x * W->nd + (p - ns)]
                  : W->pot[p] - W->C[(size_t)p * W->nd + (x - ns)];
}

/* Potentials of the subtree hanging at x (x's parent already set), from the arc costs. */
static void subtree_refresh(Work *W, int x) {
    int top = 0;
    W->stack[top++] = x;
    while (top) {
        int y = W->stack[--top];
        W->pot[y] = tree_potential(W, y, W->parent[y]);
        for (int c = W->first[y]; c >= 0; c = W->next[c]) W->stack[top++] = c;
    }
}

/* Add `shift` to the signed potentials of the subtree hanging at x: its arcs stay tight. */
static void subtree_shift(Work *W, int x, double shift) {
    int top = 0, *stack = W->stack, *first = W->first, *next = W->next;
    double *pot = W->pot;
    stack[top++] = x;
    while (top) {
        int y = stack[--top];
        pot[y] += shift;
        for (int c = first[y]; c >= 0; c = next[c]) stack[top++] = c;
    }
}

/* ---------------------------------------------------------------- initial basis */

/* Greedy allocation in cost order on the perturbed problem (each non-root node supplies an
 * extra epsilon, the root demand absorbs them): remainders are pairs (mass, eps-coefficient)
 * compared lexicographically. The perturbed problem is non-degenerate, so every allocation
 * closes exactly one row or column until the last, and the n+m-1 cells form a spanning tree
 * whose zero-flow arcs all point to the root, i.e. a strongly feasible tree. */
static int initial_tree(Work *W) {
    int ns = W->ns, nd = W->nd, N = ns + nd, root = N - 1, narcs = 0;
    for (int x = 0; x < N; x++) {
        W->rem[x] = W->mass[x];
        W->rem_eps[x] = x < ns ? 1 : -1;
        W->alive[x] = 1;
    }
    W->rem_eps[root] = N - 1;
    sort_cells(W);
    int cells = ns * nd;
    for (int t = 0; t < cells && narcs < N - 1; t++) {
        int a = W->order[t], b = ns + W->order_col[t];
        if (!W->alive[a] || !W->alive[b]) continue;
        int64_t ra = W->rem[a], rb = W->rem[b];
        int ea = W->rem_eps[a], eb = W->rem_eps[b];
        int cmp = ra != rb ? (ra < rb ? -1 : 1) : (ea != eb ? (ea < eb ? -1 : 1) : 0);
        int64_t xv = cmp <= 0 ? ra : rb;
        int xe = cmp <= 0 ? ea : eb;
        W->arc_a[narcs] = a; W->arc_b[narcs] = b; W->arc_f[narcs] = xv; narcs++;
        W->rem[a] -= xv; W->rem_eps[a] -= xe; W->rem[b] -= xv; W->rem_eps[b] -= xe;
        if (cmp <= 0) W->alive[a] = 0;
        if (cmp >= 0) W->alive[b] = 0;
        if (cmp == 0 && narcs != N - 1) return EMD_ERR_INIT;
    }
    if (narcs != N - 1) return EMD_ERR_INIT;
    /* adjacency (CSR) of the basic arcs, then a traversal from the root */
    memset(W->adj_start, 0, (N + 1) * sizeof(int));
    for (int i = 0; i < narcs; i++) { W->adj_start[W->arc_a[i] + 1]++; W->adj_start[W->arc_b[i] + 1]++; }
    for (int x = 0; x < N; x++) W->adj_start[x + 1] += W->adj_start[x];
    int *fill = W->first;                             /* scratch, reset below */
    for (int x = 0; x < N; x++) fill[x] = W->adj_start[x];
    for (int i = 0; i < narcs; i++) { W->adj[fill[W->arc_a[i]]++] = i; W->adj[fill[W->arc_b[i]]++] = i; }
    for (int x = 0; x < N; x++) { W->first[x] = -1; W->parent[x] = -2; }
    W->parent[root] = -1; W->pot[root] = 0.0; W->flow[root] = 0;
    int head = 0, tail = 0, seen = 1;
    W->stack[tail++] = root;
    while (head < tail) {
        int x = W->stack[head++];
        for (int k = W->adj_start[x]; k < W->adj_start[x + 1]; k++) {
            int i = W->adj[k], y = W->arc_a[i] == x ? W->arc_b[i] : W->arc_a[i];
            if (y == W->parent[x]) continue;
            if (W->parent[y] != -2) return EMD_ERR_INIT;   /* not a tree */
            tree_link(W, x, y);
            W->flow[y] = W->arc_f[i];
            W->pot[y] = tree_potential(W, y, x);
            W->stack[tail++] = y;
            seen++;
            /* strongly feasible: a zero-flow arc must point to the root, i.e. start at y */
            if (W->flow[y] == 0 && y >= ns) return EMD_ERR_INIT;
        }
    }
    return seen == N ? EMD_OK : EMD_ERR_INIT;
}

/* ---------------------------------------------------------------- simplex */

/* min_b (c[b] + q[b]) with four independent running minima: one minimum's chain of
 * dependent compares would bound the vectorised loop by its latency. */
static inline double row_minimum(const double *c, const double *q, int nd) {
    double m0 = HUGE_VAL, m1 = HUGE_VAL, m2 = HUGE_VAL, m3 = HUGE_VAL;
    int b = 0;
    for (; b + 4 <= nd; b += 4) {
        double r0 = c[b] + q[b], r1 = c[b + 1] + q[b + 1], r2 = c[b + 2] + q[b + 2], r3 = c[b + 3] + q[b + 3];
        m0 = r0 < m0 ? r0 : m0; m1 = r1 < m1 ? r1 : m1; m2 = r2 < m2 ? r2 : m2; m3 = r3 < m3 ? r3 : m3;
    }
    for (; b < nd; b++) { double r = c[b] + q[b]; m0 = r < m0 ? r : m0; }
    m0 = m1 < m0 ? m1 : m0; m2 = m3 < m2 ? m3 : m2;
    return m2 < m0 ? m2 : m0;
}

/* Block pricing: scan rows from *row, `block` rows at a time, and return the most negative
 * reduced cost of the first block that has one (below -tol). Returns 0 when none is left. */
static int price(Work *W, int *row, int block, double tol, int *k, int *l, double *rc_out) {
    int ns = W->ns, nd = W->nd, r = *row, in_block = 0;
    const double *q = W->pot + ns;                   /* -v of the columns */
    double best = -tol;
    int bk = -1, bl = -1;
    for (int scanned = 0; scanned < ns; scanned++) {
        const double *c = W->C + (size_t)r * nd;
        double ua = W->pot[r], low = row_minimum(c, q, nd);
        if (low - ua < best) {                           /* rare: locate it */
            for (int b = 0; b < nd; b++)
                if (c[b] + q[b] == low) { best = low - ua; bk = r; bl = b; break; }
        }
        r = r + 1 == ns ? 0 : r + 1;
        if (++in_block >= block) {
            if (bk >= 0) break;
            in_block = 0;
        }
    }
    *row = r;
    if (bk < 0) return 0;
    *k = bk; *l = ns + bl; *rc_out = best;
    return 1;
}

/* One pivot on entering arc (k -> l), k a row node, l a column node, reduced cost rc < 0. */
static void pivot(Work *W, int k, int l, double rc) {
    int *par = W->parent, *mark = W->mark, *pos = W->pos, ns = W->ns, N = ns + W->nd;
    int64_t *fl = W->flow;
    /* apex: walk up from k and from l in turn, listing the nodes passed; the apex is the first
     * node the other walk has passed. Both paths are then arrays (no more pointer chasing). */
    int *pk = W->path, *pl = W->path + N, nk = 0, nl = 0;
    int ks = W->stamp += 2, ls = ks + 1, a = k, b = l, apex;
    mark[a] = ks; pos[a] = nk; pk[nk++] = a;
    mark[b] = ls; pos[b] = nl; pl[nl++] = b;
    for (;;) {
        if (par[a] >= 0) {
            a = par[a];
            if (mark[a] == ls) { apex = a; nl = pos[a]; break; }
            mark[a] = ks; pos[a] = nk; pk[nk++] = a;
        }
        if (par[b] >= 0) {
            b = par[b];
            if (mark[b] == ks) { apex = b; nk = pos[b]; break; }
            mark[b] = ls; pos[b] = nl; pl[nl++] = b;
        }
    }
    (void)apex;
    int q = -1, side = 0;
    int64_t theta = INT64_MAX;
    /* Flow moves k -> l -> (up to apex) -> (down to) k. Decreasing arcs: on k's path those at
     * row nodes, on l's path those at column nodes. The cycle, walked from the apex along the
     * entering arc, meets k's path top-down, then l's path bottom-up: the LAST blocking arc is
     * the highest one on l's path (<=), else the deepest on k's path (strict <). */
    for (int i = 0; i < nk; i++) {
        int y = pk[i];
        if (y < ns && fl[y] < theta) { theta = fl[y]; q = y; }
    }
    for (int i = 0; i < nl; i++) {
        int x = pl[i];
        if (x >= ns && fl[x] <= theta) { theta = fl[x]; q = x; side = 1; }
    }
    if (theta > 0) {
        for (int i = 0; i < nk; i++) fl[pk[i]] += pk[i] < ns ? -theta : theta;
        for (int i = 0; i < nl; i++) fl[pl[i]] += pl[i] >= ns ? -theta : theta;
    }
    /* Drop the arc above q; the subtree of q hangs from the entering arc instead: re-root it
     * at its end of the entering arc by reversing the parent pointers up to q. */
    int e = side ? l : k, f = side ? k : l;
    int up = f, cur = e;
    int64_t carried = theta;
    for (;;) {
        int nxt = par[cur];
        int64_t nf = fl[cur];
        tree_unlink(W, cur);
        tree_link(W, up, cur);
        fl[cur] = carried;
        if (cur == q) break;
        up = cur; carried = nf; cur = nxt;
    }
    /* the re-hung subtree moves by rc, which makes the entering arc tight: u_k + rc when it
     * holds k (q_k + rc), v_l + rc when it holds l (q_l - rc) */
    subtree_shift(W, e, side ? -rc : rc);
    W->pivots++;
}

/* Potentials u (rows) and v (columns) of the whole tree from the root, recomputed from the
 * costs (no drift of the incremental updates). */
static void all_potentials(Work *W) {
    int ns = W->ns, N = ns + W->nd, root = -1;
    for (int x = 0; x < N; x++) if (W->parent[x] < 0) { root = x; break; }
    W->pot[root] = 0.0;
    for (int c = W->first[root]; c >= 0; c = W->next[c]) subtree_refresh(W, c);
    for (int x = ns; x < N; x++) W->pot[x] = -W->pot[x];  /* signed q -> v */
}

/* ---------------------------------------------------------------- one problem */

typedef struct {
    int n, m, block_rows;
    long max_pivots;
} Options;

static void write_trivial(Costs cost, int n, int m, double *u, double *v, double *obj) {
    /* nothing to transport: zero flow, v = 0, u = row minima (dual feasible, objective 0) */
    for (int b = 0; b < m; b++) v[b] = 0.0;
    for (int a = 0; a < n; a++) {
        double lo = cost_at(cost, (size_t)a * m);
        for (int b = 1; b < m; b++) { double c = cost_at(cost, (size_t)a * m + b); lo = c < lo ? c : lo; }
        u[a] = lo;
    }
    *obj = 0.0;
}

/* Duals of the nodes left out (zero mass): the largest values keeping every reduced cost
 * non-negative, columns first, then rows against all columns. A zero-mass node's dual is then
 * the one-sided derivative of the objective for adding mass there. */
static void zero_mass_duals(const Work *W, Costs cost, const double *w1, const double *w2,
                            int n, int m, double *u, double *v, const char *row_in, const char *col_in,
                            double dummy_row_u, double dummy_col_v) {
    int has_row_dummy = W->dummy == 1, has_col_dummy = W->dummy == 2;
    (void)w1; (void)w2;
    for (int b = 0; b < m; b++) {
        if (col_in[b]) continue;
        double best = has_row_dummy ? -dummy_row_u : HUGE_VAL;   /* dummy row costs 0 */
        for (int a = 0; a < n; a++)
            if (row_in[a]) { double t = cost_at(cost, (size_t)a * m + b) - u[a]; best = t < best ? t : best; }
        v[b] = best == HUGE_VAL ? 0.0 : best;
    }
    for (int a = 0; a < n; a++) {
        if (row_in[a]) continue;
        double best = has_col_dummy ? -dummy_col_v : HUGE_VAL;
        for (int b = 0; b < m; b++) { double t = cost_at(cost, (size_t)a * m + b) - v[b]; best = t < best ? t : best; }
        u[a] = best;
    }
}

/* One problem: costs read in place (float64 or float32), weights float64, the flow written in
 * the costs' precision. */
static int solve_one(Work *W, const Options *o, Costs cost, const double *w1, const double *w2,
                     void *flow, double *u, double *v, double *obj) {
    int n = o->n, m = o->m;
    memset(flow, 0, (size_t)n * m * (cost.single ? sizeof(float) : sizeof(double)));
    double scale = quantise(W, w1, w2, n, m);
    if (W->ns == 0 || W->nd == 0) { write_trivial(cost, n, m, u, v, obj); return EMD_OK; }
    gather_costs(W, cost, m);
    int status = initial_tree(W);
    if (status != EMD_OK) return status;
    memset(W->mark, 0, (size_t)(W->ns + W->nd) * sizeof(int));
    W->stamp = 0;

    double tol = 1e-12 * (W->cmax > 1.0 ? W->cmax : 1.0);
    int row = 0, k, l;
    double rc;
    long limit = o->max_pivots;
    while (price(W, &row, o->block_rows, tol, &k, &l, &rc)) {
        if (limit-- <= 0) return EMD_ERR_ITER;
        pivot(W, k, l, rc);
    }
    all_potentials(W);

    /* shift the potentials: u + t, v - t keeps every u_a + v_b */
    int ns = W->ns, nd = W->nd, N = ns + nd;
    double t;
    if (W->dummy == 2) t = W->pot[N - 1];            /* dummy column's v = 0: u <= 0 */
    else if (W->dummy == 1) t = -W->pot[ns - 1];     /* dummy row's u = 0: v <= 0 */
    else {                                           /* balanced: each side carries half */
        double su = 0, sv = 0, m1 = 0, m2 = 0;
        for (int a = 0; a < ns; a++) { su += W->pot[a] * W->mass[a]; m1 += W->mass[a]; }
        for (int b = ns; b < N; b++) { sv += W->pot[b] * W->mass[b]; m2 += W->mass[b]; }
        t = (sv - su) / (m1 + m2);
    }
    for (int x = 0; x < ns; x++) W->pot[x] += t;
    for (int x = ns; x < N; x++) W->pot[x] -= t;

    char row_in[n > 0 ? n : 1], col_in[m > 0 ? m : 1];
    memset(row_in, 0, n); memset(col_in, 0, m);
    for (int x = 0; x < ns; x++) if (W->orig[x] >= 0) { row_in[W->orig[x]] = 1; u[W->orig[x]] = W->pot[x]; }
    for (int x = ns; x < N; x++) if (W->orig[x] >= 0) { col_in[W->orig[x]] = 1; v[W->orig[x]] = W->pot[x]; }
    zero_mass_duals(W, cost, w1, w2, n, m, u, v, row_in, col_in,
                    W->dummy == 1 ? W->pot[ns - 1] : 0.0, W->dummy == 2 ? W->pot[N - 1] : 0.0);

    /* flows of the tree arcs between real nodes, and the objective */
    double inv = 1.0 / scale, total = 0.0;
    for (int x = 0; x < N; x++) {
        int p = W->parent[x];
        if (p < 0 || W->flow[x] == 0) continue;
        int ra = W->orig[x < ns ? x : p], cb = W->orig[x < ns ? p : x];
        if (ra < 0 || cb < 0) continue;
        double f = (double)W->flow[x] * inv;
        size_t i = (size_t)ra * m + cb;
        if (cost.single) ((float *)flow)[i] = (float)f; else ((double *)flow)[i] = f;
        total += f * cost_at(cost, i);
    }
    *obj = total;
    return EMD_OK;
}

/* ---------------------------------------------------------------- batch + threads */

typedef struct {
    const void *cost, *w1, *w2;    /* float64, or float32 when single */
    void *flow;                    /* in the inputs' precision */
    double *u, *v, *obj;
    int *status;
    int single;                    /* 1: cost, weights and flows are float32 */
    long batch;
    long next;                 /* shared work counter (atomic) */
    long pivots;               /* total pivots (atomic add) */
    Options opt;
} Batch;

static void *worker(void *arg) {
    Batch *B = arg;
    Work W;
    int n = B->opt.n, m = B->opt.m;
    if (work_alloc(&W, n, m) != EMD_OK) {
        /* claim the remaining problems and flag them */
        for (;;) {
            long i = __atomic_fetch_add(&B->next, 1, __ATOMIC_RELAXED);
            if (i >= B->batch) break;
            B->status[i] = EMD_ERR_NOMEM;
        }
        return NULL;
    }
    size_t nm = (size_t)n * m, item = B->single ? sizeof(float) : sizeof(double);
    /* float32 weights are widened into these small buffers; costs are read in place */
    double *w64 = B->single ? malloc((size_t)(n + m) * sizeof(double)) : NULL;
    for (;;) {
        long i = __atomic_fetch_add(&B->next, 1, __ATOMIC_RELAXED);
        if (i >= B->batch) break;
        double *u = B->u + i * n, *v = B->v + i * m, *obj = B->obj + i;
        Costs cost = {(const char *)B->cost + i * nm * item, B->single};
        void *flow = (char *)B->flow + i * nm * item;
        if (!B->single) {
            B->status[i] = solve_one(&W, &B->opt, cost, (const double *)B->w1 + i * n,
                                     (const double *)B->w2 + i * m, flow, u, v, obj);
            continue;
        }
        if (!w64) { B->status[i] = EMD_ERR_NOMEM; continue; }
        const float *a32 = (const float *)B->w1 + i * n, *b32 = (const float *)B->w2 + i * m;
        for (int k = 0; k < n; k++) w64[k] = a32[k];
        for (int k = 0; k < m; k++) w64[n + k] = b32[k];
        B->status[i] = solve_one(&W, &B->opt, cost, w64, w64 + n, flow, u, v, obj);
    }
    free(w64);
    __atomic_fetch_add(&B->pivots, W.pivots, __ATOMIC_RELAXED);
    work_free(&W);
    return NULL;
}

/* Solve `batch` problems of size n x m (contiguous arrays: cost, weights and flows float64, or
 * float32 when `single`; duals and objectives float64). status[i] = 0 when solved.
 * threads <= 1 runs in the calling thread. block_rows <= 0 picks a default. Returns the total
 * number of pivots. */
long emd_solve_batch(long batch, int n, int m, const void *cost, const void *w1,
                     const void *w2, void *flow, double *u, double *v, double *obj,
                     int *status, int threads, int block_rows, int single) {
    Batch B = {cost, w1, w2, flow, u, v, obj, status, single, batch, 0, 0, {n, m, 0, 0}};
    int N = n + m + 1;
    B.opt.block_rows = block_rows > 0 ? block_rows : 1;
    B.opt.max_pivots = 1000L * N * N + 100000L;
    if (threads > batch) threads = (int)batch;
    if (threads <= 1) { worker(&B); return B.pivots; }
    pthread_t *ids = malloc((size_t)threads * sizeof(pthread_t));
    int started = 0;
    if (ids)
        for (; started < threads - 1; started++)
            if (pthread_create(&ids[started], NULL, worker, &B) != 0) break;
    worker(&B);                                  /* the calling thread works too */
    for (int i = 0; i < started; i++) pthread_join(ids[i], NULL);
    free(ids);
    return B.pivots;
}
