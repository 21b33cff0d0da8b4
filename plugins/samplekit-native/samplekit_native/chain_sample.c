/* samplekit's top-k candidate strategy (samplekit/strategies/top_k.py) row by row, in three calls,
 * with the arithmetic of its tensor operations (see samplekit_native/__init__.py). Each row r has
 * its own k, ks[r] (<= width): its candidates are values[r * width ..] and ids[r * width ..], the
 * first ks[r] of them its own, the rest -inf (weight 0, never drawn); every call reads only a
 * row's own ks[r].
 *
 * samplekit_candidates: per row, the k + 1 largest scores (a quickselect among the scores of the
 * blocks whose maxima are largest), divided by the row's temperature (a processor before the
 * top-k; 1: none); checks them as the chain does; writes the k largest, in token-id order, to
 * values[r * width ..] and ids[r * width ..]. Returns -1 when every row is ready, 2 * r when row r has a
 * tie between its k-th and (k+1)-th values (the caller computes that step densely), 2 * r + 1 when
 * row r cannot be sampled: every score is -inf, or a score is NaN or +inf (the caller names the
 * error).
 *
 * samplekit_filter: the processors after the top-k, in order, on each row's k candidates: divide
 * by T (OP_DIVIDE), the nucleus of top-p (OP_TOP_P: sort ascending, softmax, running sum, remove
 * the values whose running sum is <= 1 - p, keep ties with the least probable kept value), min-p
 * (OP_MIN_P: remove the values below max + log p). Each op has one parameter per row
 * (param[op * rows + r]); a neutral value (T = 1, 1 - p = 0, log p = -inf) skips it. Returns -1, or
 * 2 * r + 1 when row r's maximum is no longer finite (a division overflowed).
 *
 * samplekit_draw: per row, weights exp(v - max) in float, their running sum in double rounded to
 * float at each step (as torch.cumsum on the CPU), and the first candidate whose running sum
 * exceeds u * total (u in [0, 1), the row's uniform).
 *
 * Nothing is drawn before the first two succeed, so a step that falls back draws nothing twice. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    float value;
    int64_t id;
} candidate;

static void sort_by_id(candidate *a, int64_t n) { /* insertion sort: n is a few dozen */
    for (int64_t i = 1; i < n; i++) {
        candidate t = a[i];
        int64_t j = i - 1;
        while (j >= 0 && a[j].id > t.id) {
            a[j + 1] = a[j];
            j--;
        }
        a[j + 1] = t;
    }
}

#define MAX_BLOCK 32 /* scores per block, at most (measured: 32 beat 8 and 16 at k = 50) */

/* Moves the n largest of a[0..m) (by value) to a[0..n), in no particular order (quickselect,
 * median of three; n < m). */
static void select_largest(candidate *a, int64_t m, int64_t n) {
    int64_t lo = 0, hi = m - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        float x = a[lo].value, y = a[mid].value, z = a[hi].value;
        float pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i].value > pivot) i++;
            while (a[j].value < pivot) j--;
            if (i <= j) {
                candidate t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (n - 1 <= j) hi = j;
        else if (n - 1 >= i) lo = i;
        else return;
    }
}

/* The n largest scores of a row into out[0..n), unordered (work needs room for vocab
 * entries, block_max for vocab floats). The row is cut into nb blocks of `block` strided scores
 * (block b: scores b, b + nb, b + 2 nb, ..., so their maxima build up a column at a time, which
 * vectorises), with nb at least 2 n; only scores at least the n-th largest block maximum are
 * gathered: n block maxima reach it, so the n largest values are among them, and so is the set of
 * the k largest whenever no tie straddles the k-th place (the caller checks that). */
/* Returns 1 when the row holds a NaN or +inf (!(x < INFINITY) is true for exactly those), read
 * on the way through the pass that visits every score. */
static int largest(const float *row, int64_t vocab, int64_t n, candidate *out, candidate *work,
                   float *block_max) {
    int64_t block = vocab / (2 * n), m = 0;
    int wild = 0;
    if (block > MAX_BLOCK) block = MAX_BLOCK;
    if (block >= 4) {
        int64_t nb = vocab / block; /* block * nb scores in blocks, the rest gathered as they are */
        for (int64_t b = 0; b < nb; b++) {
            block_max[b] = row[b];
            wild |= !(row[b] < INFINITY);
        }
        for (int64_t j = 1; j < block; j++) {
            const float *column = row + j * nb;
            for (int64_t b = 0; b < nb; b++) {
                block_max[b] = column[b] > block_max[b] ? column[b] : block_max[b];
                wild |= !(column[b] < INFINITY);
            }
        }
        for (int64_t b = 0; b < nb; b++) {
            work[b].value = block_max[b];
            work[b].id = b;
        }
        select_largest(work, nb, n);
        float floor = work[0].value; /* the n-th largest block maximum */
        for (int64_t i = 1; i < n; i++) floor = work[i].value < floor ? work[i].value : floor;
        for (int64_t b = 0; b < nb; b++) {
            if (!(block_max[b] >= floor)) continue;
            for (int64_t i = b; i < block * nb; i += nb) { /* branch-free: write, keep if large enough */
                work[m].value = row[i];
                work[m].id = i;
                m += row[i] >= floor;
            }
        }
        for (int64_t i = block * nb; i < vocab; i++) {
            work[m].value = row[i];
            work[m].id = i;
            m += row[i] >= floor;
            wild |= !(row[i] < INFINITY);
        }
        if (wild) return 1;
    }
    if (m < n) { /* few blocks: every score */
        for (int64_t i = 0; i < vocab; i++) {
            work[i].value = row[i];
            work[i].id = i;
            wild |= !(row[i] < INFINITY);
        }
        if (wild) return 1;
        m = vocab;
    }
    if (m > n) select_largest(work, m, n);
    for (int64_t i = 0; i < n; i++) out[i] = work[i];
    return 0;
}

int64_t samplekit_candidates(const float *scores, int64_t rows, int64_t vocab, int64_t row_stride,
                             const int64_t *ks, int64_t width, const float *temperature, float *values,
                             int64_t *ids, candidate *top_n, candidate *work, float *block_max) {
    for (int64_t r = 0; r < rows; r++) {
        const int64_t k = ks[r], n = k + 1;
        if (largest(scores + r * row_stride, vocab, n, top_n, work, block_max)) return 2 * r + 1;
        /* the (k+1)-th largest goes first; the k-th is the smallest of the rest */
        int64_t lowest = 0;
        for (int64_t i = 0; i < n; i++) {
            if (top_n[i].value < top_n[lowest].value) lowest = i;
        }
        candidate t = top_n[0];
        top_n[0] = top_n[lowest];
        top_n[lowest] = t;
        float next = top_n[0].value, kth = top_n[1].value, best = top_n[1].value;
        for (int64_t i = 1; i < n; i++) {
            if (top_n[i].value < kth) kth = top_n[i].value;
            if (top_n[i].value > best) best = top_n[i].value;
        }
        const float temp = temperature[r];
        if (temp != 1.0f) {
            next /= temp;
            kth /= temp;
            best /= temp;
        }
        if (best == -INFINITY || !(best < INFINITY)) return 2 * r + 1; /* all -inf, or +inf after dividing */
        if (kth == next && kth != -INFINITY) return 2 * r;
        sort_by_id(top_n + 1, k); /* the k largest, by token id */
        for (int64_t j = 0; j < k; j++) {
            float v = top_n[1 + j].value;
            values[r * width + j] = temp != 1.0f ? v / temp : v;
            ids[r * width + j] = top_n[1 + j].id;
        }
        for (int64_t j = k; j < width; j++) { /* past the row's own k: weight 0, never drawn */
            values[r * width + j] = -INFINITY;
            ids[r * width + j] = top_n[k].id;
        }
    }
    return -1;
}

static int ascending(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

#define OP_DIVIDE 0
#define OP_TOP_P 1
#define OP_MIN_P 2

/* top-p on one row of k values (scratch: k floats), as samplekit's TopP.process does it */
static void top_p(float *v, int64_t k, float cut, float *sorted) {
    for (int64_t j = 0; j < k; j++) sorted[j] = v[j];
    qsort(sorted, (size_t)k, sizeof(float), ascending);
    float top = sorted[k - 1], total = 0.0f;
    for (int64_t j = 0; j < k; j++) total += expf(sorted[j] - top);
    float scale = 1.0f / total;
    double running = 0.0;
    int64_t removed = 0;
    for (int64_t j = 0; j < k; j++) {
        running += (double)(expf(sorted[j] - top) * scale);
        removed += (float)running <= cut;
    }
    if (removed > k - 1) removed = k - 1; /* at least one stays */
    float threshold = sorted[removed];
    for (int64_t j = 0; j < k; j++) {
        if (v[j] < threshold) v[j] = -INFINITY;
    }
}

int64_t samplekit_filter(float *values, int64_t rows, int64_t width, const int64_t *ks, int64_t ops,
                         const int32_t *kinds, const float *params, float *scratch) {
    for (int64_t r = 0; r < rows; r++) {
        float *v = values + r * width;
        const int64_t k = ks[r];
        for (int64_t o = 0; o < ops; o++) {
            const float param = params[o * rows + r];
            if (kinds[o] == OP_DIVIDE) {
                if (param != 1.0f) {
                    for (int64_t j = 0; j < k; j++) v[j] /= param;
                }
            } else if (kinds[o] == OP_TOP_P) {
                if (param != 0.0f) top_p(v, k, param, scratch);
            } else if (kinds[o] == OP_MIN_P) {
                if (param != -INFINITY) {
                    float top = v[0];
                    for (int64_t j = 1; j < k; j++) top = v[j] > top ? v[j] : top;
                    float threshold = top + param;
                    for (int64_t j = 0; j < k; j++) {
                        if (v[j] < threshold) v[j] = -INFINITY;
                    }
                }
            }
        }
        float top = v[0];
        for (int64_t j = 1; j < k; j++) top = v[j] > top ? v[j] : top;
        if (!(top > -INFINITY && top < INFINITY)) return 2 * r + 1;
    }
    return -1;
}

void samplekit_draw(const float *values, const int64_t *ids, int64_t rows, int64_t width, const int64_t *ks,
                    const float *uniforms, int64_t u_stride, int64_t *out, float *cdf) {
    for (int64_t r = 0; r < rows; r++) {
        const float *v = values + r * width;
        const int64_t k = ks[r];
        float top = v[0];
        for (int64_t j = 1; j < k; j++) top = v[j] > top ? v[j] : top;
        double running = 0.0;
        for (int64_t j = 0; j < k; j++) {
            running += (double)expf(v[j] - top);
            cdf[j] = (float)running;
        }
        float total = cdf[k - 1];
        float target = uniforms[r * u_stride] * total;
        if (target >= total) target = nextafterf(total, 0.0f);
        int64_t pos = 0;
        while (pos < k - 1 && !(cdf[pos] > target)) pos++;
        out[r] = ids[r * width + pos];
    }
}

/* samplekit_nucleus: a chain without a top-k whose first filter is top-p, over the whole row
 * without sorting it: per row, the scores divided by the row's temperature (1: none), each one's
 * weight expf(v - max) and their total in double, then the threshold by mass (nucleus_threshold:
 * a token is removed when the probability of it and every less probable token is <= cut[r], 1 - p;
 * ties with the least probable kept value are kept). The kept tokens, in token-id order, go to
 * values[r * width ..] / ids[r * width ..] (width >= vocab), their count to ks[r]. given[r]: NaN,
 * find row r's threshold; +inf, row r is done (skip it); else keep row r's values >= given[r].
 * Returns -1 when every row is ready; -2 when some rows' running sums lie within `margin` of their
 * cut (float32 rounding of the dense softmax could decide either way), marked ks[r] = -1, for the
 * caller to decide and call again with their thresholds; 2 * r + 1 when row r cannot be sampled
 * (all -inf, a NaN or +inf, +inf after dividing). */
typedef struct {
    float value;
    float weight; /* expf(value - the row's maximum) */
} weighted;

/* The least probable kept value of top-p over a whole row without sorting it: theta, the smallest
 * value x with mass(v <= x) > cut * total (the first ascending running sum past the cut falls in
 * x's ties, all kept), found by three-way quickselect on mass among a[0..n) (every value of the
 * row between two others, `below` the mass of those under them). Returns 0 when mass(v < theta) or
 * mass(v <= theta) lies within margin * total of the cut (the dense float32 sums could decide
 * either way). */
static int nucleus_threshold(weighted *a, int64_t n, double below, double total, double cut, double margin,
                             float *theta) {
    const double target = cut * total, near = margin * total; /* below: the mass under every a[i] */
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        float x = a[lo].value, y = a[mid].value, z = a[hi - 1].value;
        float pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t lt = lo, i = lo, gt = hi;
        double less = 0.0, equal = 0.0;
        while (i < gt) {
            weighted t = a[i];
            if (t.value < pivot) {
                less += (double)t.weight;
                a[i++] = a[lt];
                a[lt++] = t;
            } else if (t.value > pivot) {
                a[i] = a[--gt];
                a[gt] = t;
            } else {
                equal += (double)t.weight;
                i++;
            }
        }
        if (below + less > target) {
            hi = lt;
        } else if (below + less + equal > target) {
            if (target - (below + less) <= near || below + less + equal - target <= near) return 0;
            *theta = pivot;
            return 1;
        } else {
            below += less + equal;
            lo = gt;
        }
    }
    return 0;
}

#define BUCKETS 1024
#define BUCKET_SCALE 32.0f /* buckets per unit of logit below the maximum: 32 units in all */

/* v's bucket: monotone in v (a larger value, a bucket no later), equal values in one bucket */
static inline int64_t bucket(float top, float v) {
    float d = (top - v) * BUCKET_SCALE;
    return d < (float)(BUCKETS - 1) ? (int64_t)d : BUCKETS - 1;
}

int64_t samplekit_nucleus(const float *scores, int64_t rows, int64_t vocab, int64_t row_stride,
                          const float *temperature, const double *cut, double margin, int64_t width, float *values,
                          int64_t *ids, int64_t *ks, const float *given, candidate *work, float *divided) {
    double mass[BUCKETS];
    int64_t undecided = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = scores + r * row_stride;
        const float temp = temperature[r];
        if (given[r] == INFINITY) continue; /* done by an earlier call */
        if (given[r] == given[r]) { /* the caller's threshold: keep every value at least it */
            int64_t n = 0;
            for (int64_t i = 0; i < vocab; i++) {
                float v = temp != 1.0f ? row[i] / temp : row[i];
                if (v >= given[r]) {
                    values[r * width + n] = v;
                    ids[r * width + n] = i;
                    n++;
                }
            }
            ks[r] = n;
            continue;
        }
        float most = row[0];
        int wild = 0;
        for (int64_t i = 0; i < vocab; i++) {
            most = row[i] > most ? row[i] : most;
            wild |= !(row[i] < INFINITY);
        }
        if (wild || most == -INFINITY) return 2 * r + 1;
        const float top = temp != 1.0f ? most / temp : most;
        if (!(top < INFINITY)) return 2 * r + 1;
        /* one pass: each value, its weight, the total, and the mass of each bucket of values
         * (bucket b: top - v in [b, b + 1) / BUCKET_SCALE, the last one everything lower) */
        double total = 0.0;
        for (int64_t b = 0; b < BUCKETS; b++) mass[b] = 0.0;
        for (int64_t i = 0; i < vocab; i++) {
            float v = temp != 1.0f ? row[i] / temp : row[i];
            float w = expf(v - top);
            divided[i] = v;
            total += (double)w;
            mass[bucket(top, v)] += (double)w;
        }
        /* the bucket where the running sum from the least probable value passes the cut */
        const double target = cut[r] * total;
        double below = 0.0;
        int64_t at = BUCKETS - 1;
        while (at > 0 && below + mass[at] <= target) below += mass[at--];
        weighted *some = (weighted *)work;
        int64_t m = 0;
        for (int64_t i = 0; i < vocab; i++) {
            if (bucket(top, divided[i]) == at) {
                some[m].value = divided[i];
                some[m].weight = expf(divided[i] - top);
                m++;
            }
        }
        float theta;
        if (!nucleus_threshold(some, m, below, total, cut[r], margin, &theta)) {
            ks[r] = -1; /* too close to call here: the caller finds the threshold */
            undecided++;
            continue;
        }
        int64_t n = 0;
        for (int64_t i = 0; i < vocab; i++) {
            if (divided[i] >= theta) {
                values[r * width + n] = divided[i];
                ids[r * width + n] = i;
                n++;
            }
        }
        ks[r] = n;
    }
    return undecided ? -2 : -1;
}
