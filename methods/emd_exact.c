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
 *  - The tree is parent pointers plus each node's subtree as a bitset (one 64-bit word per 64
 *    nodes): the apex of a pivot cycle is the first node above k whose subtree holds l, a pivot
 *    updates the bitsets of the cycle's nodes only, and the moved subtree's potentials are
 *    shifted by walking its bits (no child lists to chase).
 *  - The greedy start filters each chunk of cells without branches before allocating the few
 *    whose row and column are both still open, and reads the tree off the allocation order:
 *    the line an allocation closes hangs from the other one (it closes first), then the tree
 *    is re-hung from the root (no adjacency lists, no traversal).
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
    /* spanning tree: parent pointers plus subtree bitsets */
    int *parent, *mark, *stack;     /* mark: flags of all_potentials */
    int *path;                 /* a pivot's two paths to the apex (k's, then l's at path + N) */
    uint64_t *sub;             /* subtree of node x: bits of sub[x * words ...] */
    uint64_t *scratch;         /* 2 x words */
    int words;
    int64_t *flow;             /* flow on the arc joining a node to its parent */
    double *pot;               /* signed potentials q (u on rows, -v on columns); u, v at the end */
    /* initial basis */
    int64_t *rem;
    int *rem_eps;
    char *alive;
    int *order, *order_col;    /* cells in cost order: row, column (no division to split an index) */
    uint8_t *keys;             /* cost bucket of each cell (sort_cells) */
    long pivots;
    double cmax;               /* largest |cost| (tolerance scale) */
} Work;

/* ---------------------------------------------------------------- workspace */

static void work_free(Work *W) {
    free(W->orig); free(W->C); free(W->mass); free(W->parent);
    free(W->mark); free(W->path); free(W->stack); free(W->flow); free(W->pot); free(W->rem);
    free(W->rem_eps); free(W->alive);
    free(W->order); free(W->order_col); free(W->keys); free(W->sub); free(W->scratch);
}

static int work_alloc(Work *W, int n, int m) {
    size_t N = (size_t)n + m + 2, cells = ((size_t)n + 1) * ((size_t)m + 1);
    memset(W, 0, sizeof(*W));
    W->orig = malloc(N * sizeof(int)); W->C = malloc(cells * sizeof(double));
    W->mass = malloc(N * sizeof(int64_t)); W->parent = malloc(N * sizeof(int));
    W->mark = malloc(N * sizeof(int));
    W->path = malloc(2 * N * sizeof(int));
    W->stack = malloc(N * sizeof(int)); W->flow = malloc(N * sizeof(int64_t));
    W->pot = malloc(N * sizeof(double)); W->rem = malloc(N * sizeof(int64_t));
    W->rem_eps = malloc(N * sizeof(int)); W->alive = malloc(N);
    W->order = malloc(cells * sizeof(int));
    W->order_col = malloc(cells * sizeof(int));
    W->keys = malloc(cells);
    W->words = (int)((N + 63) / 64); W->sub = malloc(N * W->words * sizeof(uint64_t));
    W->scratch = malloc(2 * W->words * sizeof(uint64_t));
    if (!W->orig || !W->C || !W->mass || !W->parent ||
        !W->mark || !W->path || !W->stack || !W->flow || !W->pot || !W->rem || !W->rem_eps || !W->alive ||
        !W->order || !W->order_col ||
        !W->keys || !W->sub || !W->scratch) {
        work_free(W);
        return EMD_ERR_NOMEM;
    }
    return EMD_OK;
}

/* ---------------------------------------------------------------- set-up */

/* A problem's costs as the caller passed them, float64 or float32 (read in place, widened
 * value by value: float32 problems are not copied into a float64 matrix first; rows `row`
 * elements apart, so a strided view of a larger array needs no copy), or given as 1 - s of a
 * similarity s, subtracted in the caller's precision (as numpy's `1 - s`). */
typedef struct {
    const void *data;          /* the problem's cell (0, 0) */
    long row;                  /* elements from one row to the next */
    int single;
    int one_minus;             /* 1: the values are similarities s, the costs 1 - s */
} Costs;

static inline double cost_at(Costs c, int a, int b) {
    size_t i = (size_t)a * c.row + b;
    if (c.single) {
        float x = ((const float *)c.data)[i];
        return c.one_minus ? (double)(1.0f - x) : (double)x;
    }
    double x = ((const double *)c.data)[i];
    return c.one_minus ? 1.0 - x : x;
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
        int64_t q = (int64_t)(w1[a] * scale + 0.5);   /* llround, as 0 <= w * scale < 2^50 */
        if (q > 0) { W->orig[ns] = a; W->mass[ns] = q; ns++; t1 += q; }
    }
    for (int b = 0; b < m; b++) {
        int64_t q = (int64_t)(w2[b] * scale + 0.5);
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
    int every_column = W->dummy != 2 && nd == m;    /* the usual case: a plain widening copy */
    for (int a = 0; a < ns; a++) {
        int ra = W->orig[a];
        double *row = W->C + (size_t)a * nd;
        if (ra < 0) { memset(row, 0, nd * sizeof(double)); continue; }
        if (cost.one_minus && cost.single && every_column) {
            const float *src = (const float *)cost.data + (size_t)ra * cost.row;
            for (int b = 0; b < nd; b++) row[b] = (double)(1.0f - src[b]);
        } else if (cost.one_minus) {
            for (int b = 0; b < nd; b++) row[b] = col[b] < 0 ? 0.0 : cost_at(cost, ra, col[b]);
        } else if (cost.single) {
            const float *src = (const float *)cost.data + (size_t)ra * cost.row;
            if (every_column) for (int b = 0; b < nd; b++) row[b] = (double)src[b];
            else for (int b = 0; b < nd; b++) row[b] = col[b] < 0 ? 0.0 : (double)src[col[b]];
        } else {
            const double *src = (const double *)cost.data + (size_t)ra * cost.row;
            if (every_column) memcpy(row, src, nd * sizeof(double));
            else for (int b = 0; b < nd; b++) row[b] = col[b] < 0 ? 0.0 : src[col[b]];
        }
    }
}

/* Cells in roughly increasing cost order: one counting pass over 256 cost buckets (cells of a
 * bucket keep their index order). The order only steers the heuristic, so this is enough. */
static void sort_cells(Work *W) {
    int cells = W->ns * W->nd, i = 0;
    /* cost range with four independent minima and maxima (one chain would be latency-bound) */
    double lo4[4], hi4[4];
    for (int j = 0; j < 4; j++) lo4[j] = hi4[j] = W->C[0];
    for (; i + 4 <= cells; i += 4)
        for (int j = 0; j < 4; j++) {
            double c = W->C[i + j];
            lo4[j] = c < lo4[j] ? c : lo4[j]; hi4[j] = c > hi4[j] ? c : hi4[j];
        }
    for (; i < cells; i++) { double c = W->C[i]; lo4[0] = c < lo4[0] ? c : lo4[0]; hi4[0] = c > hi4[0] ? c : hi4[0]; }
    double lo = fmin(fmin(lo4[0], lo4[1]), fmin(lo4[2], lo4[3]));
    double hi = fmax(fmax(hi4[0], hi4[1]), fmax(hi4[2], hi4[3]));
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

/* Signed potential of node x from its parent p's, the arc x-p being tight: q_row - q_col = c. */
static inline double tree_potential(const Work *W, int x, int p) {
    int ns = W->ns;
    return x < ns ? W->pot[p] + W->C[(size_t)x * W->nd + (p - ns)]
                  : W->pot[p] - W->C[(size_t)p * W->nd + (x - ns)];
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
    /* Most cells are passed over (a line of theirs is closed): chunks of cells are first
     * filtered without branches, then the few survivors are allocated one by one. */
    int open[64];
    char *alive = W->alive;
    for (int t = 0; t < cells && narcs < N - 1; t += 64) {
        int end = t + 64 < cells ? t + 64 : cells, found = 0;
        for (int i = t; i < end; i++) {
            open[found] = i;
            found += alive[W->order[i]] & alive[ns + W->order_col[i]];
        }
        for (int j = 0; j < found && narcs < N - 1; j++) {
            int a = W->order[open[j]], b = ns + W->order_col[open[j]];
            if (!alive[a] || !alive[b]) continue;
            int64_t ra = W->rem[a], rb = W->rem[b];
            int ea = W->rem_eps[a], eb = W->rem_eps[b];
            int cmp = ra != rb ? (ra < rb ? -1 : 1) : (ea != eb ? (ea < eb ? -1 : 1) : 0);
            int64_t xv = cmp <= 0 ? ra : rb;
            int xe = cmp <= 0 ? ea : eb;
            /* the line that closes hangs from the other one: it closes before its parent,
             * so parents come after children in the allocation order */
            int child = cmp <= 0 ? a : b, par = cmp <= 0 ? b : a;
            W->parent[child] = par; W->flow[child] = xv; W->stack[narcs++] = child;
            W->rem[a] -= xv; W->rem_eps[a] -= xe; W->rem[b] -= xv; W->rem_eps[b] -= xe;
            if (cmp <= 0) alive[a] = 0;
            if (cmp >= 0) alive[b] = 0;
            if (cmp == 0 && narcs != N - 1) return EMD_ERR_INIT;
        }
    }
    if (narcs != N - 1) return EMD_ERR_INIT;
    /* The last allocation closed two lines: the one not hung is the top of this tree. */
    int top = W->parent[W->stack[N - 2]];
    W->parent[top] = -1; W->flow[top] = 0; W->stack[N - 1] = top;
    /* subtree bitsets, children before parents */
    int words = W->words;
    memset(W->sub, 0, (size_t)N * words * sizeof(uint64_t));
    for (int i = 0; i < N; i++) {
        int x = W->stack[i], p = W->parent[x];
        uint64_t *sx = W->sub + (size_t)x * words;
        sx[x >> 6] |= 1ULL << (x & 63);
        if (p >= 0) for (int w = 0; w < words; w++) W->sub[(size_t)p * words + w] |= sx[w];
    }
    /* potentials, parents before children (any node may have potential 0: they are fixed up
     * to one constant) */
    W->pot[top] = 0.0;
    for (int i = N - 2; i >= 0; i--) { int x = W->stack[i]; W->pot[x] = tree_potential(W, x, W->parent[x]); }
    /* Hang the tree from the root (the epsilon sink) instead: reverse the parent pointers from
     * the root up to the top, each node taking the arc (and flow) to its old parent; p_i's
     * subtree becomes everything but p_{i-1}'s old subtree. */
    uint64_t *prev = W->scratch;
    for (int w = 0; w < words; w++) prev[w] = 0;
    int up = -1, cur = root;
    int64_t carried = 0;
    while (cur >= 0) {
        int next = W->parent[cur];
        int64_t old = W->flow[cur];
        W->parent[cur] = up; W->flow[cur] = carried;
        for (int w = 0; w < words; w++) {
            uint64_t *sw = W->sub + (size_t)cur * words + w, before = *sw;
            uint64_t every = w < N >> 6 ? ~0ULL : w == N >> 6 ? (1ULL << (N & 63)) - 1 : 0;   /* nodes 0..N-1 */
            *sw = every & ~prev[w];
            prev[w] = before;
        }
        up = cur; carried = old; cur = next;
    }
    /* strongly feasible: a zero-flow arc must point to the root, i.e. not hang a column */
    for (int y = ns; y < N; y++)
        if (W->parent[y] >= 0 && W->flow[y] == 0) return EMD_ERR_INIT;
    return EMD_OK;
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

/* One pivot on entering arc (k -> l), k a row node, l a column node, reduced cost rc < 0.
 * `words` is W->words, passed so that the common one-word case compiles without loops. */
static inline __attribute__((always_inline)) void pivot_words(Work *W, int k, int l, double rc, int words) {
    int *par = W->parent, ns = W->ns, N = ns + W->nd;
    int64_t *fl = W->flow;
    uint64_t *sub = W->sub;
    /* The apex is the first node above k whose subtree holds l. Flow moves k -> l -> (up to
     * the apex) -> (down to) k: decreasing arcs are, on k's path, those at row nodes, on l's
     * path those at column nodes. The cycle, walked from the apex along the entering arc, meets
     * k's path top-down, then l's path bottom-up: the LAST blocking arc is the highest one on
     * l's path (<=), else the deepest on k's path (strict <). */
    int *pk = W->path, *pl = W->path + N, nk = 0, nl = 0, q = -1, qi = 0, side = 0;
    int64_t theta = INT64_MAX;
    const size_t lw = (size_t)(l >> 6);
    const uint64_t lbit = 1ULL << (l & 63);
    for (int a = k; !(sub[(size_t)a * words + lw] & lbit); a = par[a]) {
        if (a < ns && fl[a] < theta) { theta = fl[a]; q = a; qi = nk; }
        pk[nk++] = a;
    }
    int apex = nk ? par[pk[nk - 1]] : k;
    for (int b = l; b != apex; b = par[b]) {
        if (b >= ns && fl[b] <= theta) { theta = fl[b]; q = b; qi = nl; side = 1; }
        pl[nl++] = b;
    }
    if (theta > 0) {
        for (int i = 0; i < nk; i++) fl[pk[i]] += pk[i] < ns ? -theta : theta;
        for (int i = 0; i < nl; i++) fl[pl[i]] += pl[i] >= ns ? -theta : theta;
    }
    /* Subtree bitsets: q's subtree S moves from q's old parent to the entering arc. Above the
     * apex nothing changes; below it, q's old ancestors lose S and f's ancestors gain it; on
     * the re-rooted path e = p0, p1, ..., q (old parents), p_i's subtree becomes S minus
     * p_{i-1}'s old subtree. */
    int f = side ? k : l;
    int *epath = side ? pl : pk, *fpath = side ? pk : pl, ne = side ? nl : nk, nf = side ? nk : nl;
    uint64_t *S = W->scratch, *prev = S + words;
    for (int w = 0; w < words; w++) S[w] = sub[(size_t)q * words + w];
    for (int i = qi + 1; i < ne; i++)
        for (int w = 0; w < words; w++) sub[(size_t)epath[i] * words + w] &= ~S[w];
    for (int i = 0; i < nf; i++)
        for (int w = 0; w < words; w++) sub[(size_t)fpath[i] * words + w] |= S[w];
    for (int w = 0; w < words; w++) prev[w] = 0;
    for (int i = 0; i <= qi; i++)
        for (int w = 0; w < words; w++) {
            uint64_t *si = sub + (size_t)epath[i] * words + w, old = *si;
            *si = S[w] & ~prev[w]; prev[w] = old;
        }
    /* Drop the arc above q; the subtree of q hangs from the entering arc instead: re-root it
     * at its end of the entering arc by reversing the parent pointers up to q. */
    int up = f;
    int64_t carried = theta;
    for (int i = 0; i <= qi; i++) {
        int cur = epath[i];
        int64_t old = fl[cur];
        par[cur] = up; fl[cur] = carried;
        up = cur; carried = old;
    }
    /* the re-hung subtree moves by rc, which makes the entering arc tight: u_k + rc when it
     * holds k (q_k + rc), v_l + rc when it holds l (q_l - rc) */
    double shift = side ? -rc : rc, *pot = W->pot;
    for (int w = 0; w < words; w++)
        for (uint64_t bits = S[w]; bits; bits &= bits - 1) pot[w * 64 + __builtin_ctzll(bits)] += shift;
    W->pivots++;
}

static void pivot(Work *W, int k, int l, double rc) {
    if (W->words == 1) pivot_words(W, k, l, rc, 1);
    else pivot_words(W, k, l, rc, W->words);
}

/* Potentials u (rows) and v (columns) of the whole tree from the root (potential 0),
 * recomputed from the costs (no drift of the incremental updates): each node's chain of
 * ancestors not yet done is walked once. */
static void all_potentials(Work *W) {
    int ns = W->ns, N = ns + W->nd, *par = W->parent, *done = W->mark, *stack = W->stack;
    for (int x = 0; x < N; x++) {
        done[x] = par[x] < 0;
        if (done[x]) W->pot[x] = 0.0;
    }
    for (int x = 0; x < N; x++) {
        int top = 0, y = x;
        while (!done[y]) { stack[top++] = y; y = par[y]; }
        while (top) { y = stack[--top]; W->pot[y] = tree_potential(W, y, par[y]); done[y] = 1; }
    }
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
        double lo = cost_at(cost, a, 0);
        for (int b = 1; b < m; b++) { double c = cost_at(cost, a, b); lo = c < lo ? c : lo; }
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
            if (row_in[a]) { double t = cost_at(cost, a, b) - u[a]; best = t < best ? t : best; }
        v[b] = best == HUGE_VAL ? 0.0 : best;
    }
    for (int a = 0; a < n; a++) {
        if (row_in[a]) continue;
        double best = has_col_dummy ? -dummy_col_v : HUGE_VAL;
        for (int b = 0; b < m; b++) { double t = cost_at(cost, a, b) - v[b]; best = t < best ? t : best; }
        u[a] = best;
    }
}

/* One problem: costs (and the optional payoff) read in place, float64 or float32, weights
 * float64; the flow, unless NULL, written in the costs' precision; *obj = sum flow * cost and,
 * with a payoff, *pay = sum flow * payoff (both over the optimal basis, in float64). */
static int solve_one(Work *W, const Options *o, Costs cost, Costs payoff, const double *w1, const double *w2,
                     void *flow, double *u, double *v, double *obj, double *pay) {
    int n = o->n, m = o->m;
    if (flow) memset(flow, 0, (size_t)n * m * (cost.single ? sizeof(float) : sizeof(double)));
    if (pay) *pay = 0.0;
    double scale = quantise(W, w1, w2, n, m);
    if (W->ns == 0 || W->nd == 0) { write_trivial(cost, n, m, u, v, obj); return EMD_OK; }
    gather_costs(W, cost, m);
    int status = initial_tree(W);
    if (status != EMD_OK) return status;

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

    /* flows of the tree arcs between real nodes, the objective and the payoff */
    double inv = 1.0 / scale, total = 0.0, gain = 0.0;
    for (int x = 0; x < N; x++) {
        int p = W->parent[x];
        if (p < 0 || W->flow[x] == 0) continue;
        int ra = W->orig[x < ns ? x : p], cb = W->orig[x < ns ? p : x];
        if (ra < 0 || cb < 0) continue;
        double f = (double)W->flow[x] * inv;
        size_t i = (size_t)ra * m + cb;
        if (flow && cost.single) ((float *)flow)[i] = (float)f;
        else if (flow) ((double *)flow)[i] = f;
        total += f * cost_at(cost, ra, cb);
        if (pay) gain += f * cost_at(payoff, ra, cb);
    }
    *obj = total;
    if (pay) *pay = gain;
    return EMD_OK;
}

/* ---------------------------------------------------------------- batch + threads */

typedef struct {
    const void *cost, *w1, *w2;    /* float64, or float32 when single */
    void *flow;                    /* in the inputs' precision; NULL: not written */
    double *u, *v, *obj;
    const void *payoff;            /* optional [batch, n, m] like cost: its total under the flow ... */
    double *pay;                   /* ... goes here (NULL when no payoff) */
    const int64_t *offsets;        /* element offset of each problem in cost / payoff (NULL: i*n*m) */
    long row;                      /* elements between rows of a problem in cost / payoff */
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
        double *u = B->u + i * n, *v = B->v + i * m, *obj = B->obj + i, *pay = B->pay ? B->pay + i : NULL;
        /* cost and payoff share one layout; cost NULL: the costs are 1 - payoff */
        size_t at = (B->offsets ? (size_t)B->offsets[i] : i * nm) * item;
        const void *own = B->cost ? (const char *)B->cost + at : NULL;
        Costs payoff = {B->payoff ? (const char *)B->payoff + at : NULL, B->row, B->single, 0};
        Costs cost = {own ? own : payoff.data, B->row, B->single, own == NULL};
        void *flow = B->flow ? (char *)B->flow + i * nm * item : NULL;
        if (!B->single) {
            B->status[i] = solve_one(&W, &B->opt, cost, payoff, (const double *)B->w1 + i * n,
                                     (const double *)B->w2 + i * m, flow, u, v, obj, pay);
            continue;
        }
        if (!w64) { B->status[i] = EMD_ERR_NOMEM; continue; }
        const float *a32 = (const float *)B->w1 + i * n, *b32 = (const float *)B->w2 + i * m;
        for (int k = 0; k < n; k++) w64[k] = a32[k];
        for (int k = 0; k < m; k++) w64[n + k] = b32[k];
        B->status[i] = solve_one(&W, &B->opt, cost, payoff, w64, w64 + n, flow, u, v, obj, pay);
    }
    free(w64);
    __atomic_fetch_add(&B->pivots, W.pivots, __ATOMIC_RELAXED);
    work_free(&W);
    return NULL;
}

/* Solve `batch` problems of size n x m (contiguous arrays: cost, weights and flows float64, or
 * float32 when `single`; duals and objectives float64). status[i] = 0 when solved.
 * flow may be NULL (not written). payoff, optional (NULL), is a second [batch, n, m] array like
 * cost whose total under each optimal flow goes to payoff_value[i] (DeepEMD's score: the
 * similarity under the flow, without writing and re-reading dense flows). cost may be NULL
 * when payoff is given: the costs are then 1 - payoff (DeepEMD's 1 - cosine), read in place.
 * Cost and payoff may be strided views: problem i starts offsets[i] elements into them (NULL:
 * i * n * m) and its rows are row_stride elements apart (<= 0: m); flows are always dense.
 * threads <= 1 runs in the calling thread. block_rows <= 0 picks a default. Returns the total
 * number of pivots. */
long emd_solve_batch(long batch, int n, int m, const void *cost, const void *w1,
                     const void *w2, void *flow, double *u, double *v, double *obj,
                     int *status, int threads, int block_rows, int single,
                     const void *payoff, double *payoff_value, const int64_t *offsets, long row_stride) {
    Batch B = {cost, w1, w2, flow, u, v, obj, payoff, payoff_value, offsets, row_stride > 0 ? row_stride : m,
               status, single, batch, 0, 0, {n, m, 0, 0}};
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
