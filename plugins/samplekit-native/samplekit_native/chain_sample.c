/* samplekit's top-k candidate strategy (samplekit/strategies/top_k.py) row by row, in three calls,
 * with the arithmetic of its tensor operations (see samplekit_native/__init__.py):
 *
 * samplekit_candidates: per row, the k + 1 largest scores (a quickselect among the scores of the
 * blocks whose maxima are largest), divided by the row's temperature (a processor before the
 * top-k; 1: none); checks them as the chain does; writes the k largest, in token-id order, to
 * values[r * k ..] and ids[r * k ..]. Returns -1 when every row is ready, 2 * r when row r has a
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

int64_t samplekit_candidates(const float *scores, int64_t rows, int64_t vocab, int64_t row_stride, int64_t k,
                             const float *temperature, float *values, int64_t *ids, candidate *top_n,
                             candidate *work, float *block_max) {
    const int64_t n = k + 1;
    for (int64_t r = 0; r < rows; r++) {
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
            values[r * k + j] = temp != 1.0f ? v / temp : v;
            ids[r * k + j] = top_n[1 + j].id;
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

int64_t samplekit_filter(float *values, int64_t rows, int64_t k, int64_t ops, const int32_t *kinds,
                         const float *params, float *scratch) {
    for (int64_t r = 0; r < rows; r++) {
        float *v = values + r * k;
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

void samplekit_draw(const float *values, const int64_t *ids, int64_t rows, int64_t k, const float *uniforms,
                    int64_t u_stride, int64_t *out, float *cdf) {
    for (int64_t r = 0; r < rows; r++) {
        const float *v = values + r * k;
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
        out[r] = ids[r * k + pos];
    }
}
