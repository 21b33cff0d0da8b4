/* Temperature, top-k and inverse-CDF sampling, row by row: samplekit's top-k candidate strategy
 * (samplekit/strategies/top_k.py) for the chain temperature -> top_k -> multinomial, in two calls
 * and with the arithmetic of its tensor operations (see samplekit_native/__init__.py).
 *
 * samplekit_top_k: per row, the k + 1 largest scores (a quickselect among the scores of the blocks
 * whose maxima are largest); checks them as the chain does after the temperature; keeps the k
 * largest in token-id order in cand[r * (k+1) + 1 ..].
 * Returns -1 when every row is ready, 2 * r when row r has a tie between its k-th and (k+1)-th
 * values (the caller samples that step densely), 2 * r + 1 when row r cannot be sampled: every
 * score is -inf, or a score is NaN or +inf (the caller names the error). Nothing is drawn before
 * this succeeds, so a step that falls back draws nothing twice.
 *
 * samplekit_sample: per row, weights exp(v / T - max / T) in float, their running sum in double
 * rounded to float at each step (as torch.cumsum on the CPU), and the first candidate whose
 * running sum exceeds u * total (u in [0, 1), the row's uniform). */

#include <math.h>
#include <stdint.h>

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

int64_t samplekit_top_k(const float *scores, int64_t rows, int64_t vocab, int64_t row_stride, int64_t k,
                        float temperature, candidate *cand, float *top, candidate *work, float *block_max) {
    const int64_t n = k + 1;
    for (int64_t r = 0; r < rows; r++) {
        candidate *top_n = cand + r * n;
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
        if (temperature != 1.0f) {
            next /= temperature;
            kth /= temperature;
            best /= temperature;
        }
        if (best == -INFINITY || !(best < INFINITY)) return 2 * r + 1; /* all -inf, or +inf after dividing */
        if (kth == next && kth != -INFINITY) return 2 * r;
        sort_by_id(top_n + 1, k); /* the k largest, by token id */
        top[r] = best;
    }
    return -1;
}

void samplekit_sample(const candidate *cand, const float *top, int64_t rows, int64_t k, float temperature,
                      const float *uniforms, int64_t u_stride, int64_t *out, float *cdf) {
    for (int64_t r = 0; r < rows; r++) {
        const candidate *kept = cand + r * (k + 1) + 1;
        double running = 0.0;
        for (int64_t j = 0; j < k; j++) {
            float v = temperature != 1.0f ? kept[j].value / temperature : kept[j].value;
            running += (double)expf(v - top[r]);
            cdf[j] = (float)running;
        }
        float total = cdf[k - 1];
        float target = uniforms[r * u_stride] * total;
        if (target >= total) target = nextafterf(total, 0.0f);
        int64_t pos = 0;
        while (pos < k - 1 && !(cdf[pos] > target)) pos++;
        out[r] = kept[pos].id;
    }
}
