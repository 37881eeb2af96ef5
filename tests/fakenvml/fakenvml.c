/*
 * A fake libnvidia-ml.so.1 for tests: nvidia-ml-py (pynvml) loads it by soname.
 *
 * It reads the script named by $FAKE_NVML_SCRIPT, re-read whenever the file's mtime, inode
 * or size changes, so a test changes readings by rewriting the script. Format, one
 * statement a line, '#' starts a comment:
 *
 *   driver 550.54.15
 *   gpu index=0 minor=4 uuid=GPU-x name=Fake-H100 pci=00000000:17:00.0 mem_total=BYTES
 *       util=PCT mem_util=PCT mem_used=BYTES power=MW energy=MJ energy_rate=MW
 *       procs=PID:BYTES,PID:BYTES throttle=BITS ecc_corrected=N ecc_uncorrected=N xids=79,48
 *       temp=CELSIUS   (no temp=: nvmlDeviceGetTemperature answers NOT_SUPPORTED)
 *   fail INDEX|* FUNCTION CODE    FUNCTION returns the NVML error CODE (3: not supported)
 *   hang INDEX|* FUNCTION MS      FUNCTION sleeps MS milliseconds before answering
 *   latency FUNCTION|* P50 P90 MAX   FUNCTION (every function: *) takes this long, in
 *                                 microseconds, burning CPU as the real driver does
 *   latency_profile h200          the per-call latencies measured on an NVIDIA H200
 *                                 (driver 550, 200 calls each, idle and under load)
 *
 * (a gpu statement is one line.) GPUs are listed in NVML index order; energy_rate adds
 * MW x elapsed time since nvmlInit to the energy counter. XIDs in xids= are delivered once
 * each, in order, through the event set API. With no script there are no GPUs.
 *
 * Latencies: each call draws its duration from a piecewise-linear quantile function
 * through (0, 0.85 x P50), (0.5, P50), (0.9, P90), (0.995, MAX) with a fixed-seed
 * generator, so a benchmark is repeatable, and burns that much CPU time with the library
 * lock released (a real NVML call is CPU time in the driver, not sleep).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_GPUS 16
#define MAX_PROCS 64
#define MAX_RULES 64
#define MAX_XIDS 64
#define MAX_LATENCIES 64

enum {
    OK = 0, ERR_UNINITIALIZED = 1, ERR_INVALID_ARGUMENT = 2, ERR_NOT_SUPPORTED = 3,
    ERR_NOT_FOUND = 6, ERR_INSUFFICIENT_SIZE = 7, ERR_TIMEOUT = 10, ERR_UNKNOWN = 999
};

typedef struct gpu {
    int present;
    unsigned index, minor, util, mem_util, power;
    char uuid[96], name[96], pci[32];
    unsigned long long mem_total, mem_used, energy, energy_rate, throttle, ecc_c, ecc_u;
    int has_temp;
    unsigned temp;
    int nprocs;
    unsigned pids[MAX_PROCS];
    unsigned long long pmem[MAX_PROCS];
    int nxids, xids_delivered;
    unsigned long long xids[MAX_XIDS];
} gpu_t;

typedef struct rule { int gpu; /* -1: any */ char fn[96]; long value; int hang; } rule_t;
typedef struct latency { char fn[96]; /* "*": any */ double p50, p90, max; } latency_t;

typedef struct { gpu_t *device; unsigned long long eventType, eventData; unsigned gi, ci; } event_data_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static gpu_t gpus[MAX_GPUS];
static int ngpus;
static rule_t rules[MAX_RULES];
static int nrules;
static latency_t latencies[MAX_LATENCIES];
static int nlatencies;
static unsigned long long rng_state = 0x9E3779B97F4A7C15ULL;
static char driver[80] = "0.0.0";
static struct timespec seen_mtime;
static ino_t seen_ino;
static off_t seen_size = -1;
static struct timespec init_time;
static int initialized;
static int xids_delivered_saved[MAX_GPUS];
static int event_set_token;
static unsigned long long registered[MAX_GPUS];

static unsigned long long ull(const char *s) { return strtoull(s, NULL, 10); }

static void parse_gpu(char *rest) {
    gpu_t g;
    memset(&g, 0, sizeof g);
    g.present = 1;
    for (char *tok = strtok(rest, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        if (!strcmp(k, "index")) g.index = (unsigned)ull(v);
        else if (!strcmp(k, "minor")) g.minor = (unsigned)ull(v);
        else if (!strcmp(k, "uuid")) snprintf(g.uuid, sizeof g.uuid, "%s", v);
        else if (!strcmp(k, "name")) snprintf(g.name, sizeof g.name, "%s", v);
        else if (!strcmp(k, "pci")) snprintf(g.pci, sizeof g.pci, "%s", v);
        else if (!strcmp(k, "mem_total")) g.mem_total = ull(v);
        else if (!strcmp(k, "mem_used")) g.mem_used = ull(v);
        else if (!strcmp(k, "util")) g.util = (unsigned)ull(v);
        else if (!strcmp(k, "mem_util")) g.mem_util = (unsigned)ull(v);
        else if (!strcmp(k, "power")) g.power = (unsigned)ull(v);
        else if (!strcmp(k, "energy")) g.energy = ull(v);
        else if (!strcmp(k, "energy_rate")) g.energy_rate = ull(v);
        else if (!strcmp(k, "throttle")) g.throttle = ull(v);
        else if (!strcmp(k, "ecc_corrected")) g.ecc_c = ull(v);
        else if (!strcmp(k, "ecc_uncorrected")) g.ecc_u = ull(v);
        else if (!strcmp(k, "temp")) { g.temp = (unsigned)ull(v); g.has_temp = 1; }
        else if (!strcmp(k, "procs") || !strcmp(k, "xids")) {
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", v);
            char *save = NULL;
            for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
                if (k[0] == 'p' && g.nprocs < MAX_PROCS) {
                    char *colon = strchr(p, ':');
                    g.pids[g.nprocs] = (unsigned)ull(p);
                    g.pmem[g.nprocs] = colon ? ull(colon + 1) : 0;
                    g.nprocs++;
                } else if (k[0] == 'x' && g.nxids < MAX_XIDS) {
                    g.xids[g.nxids++] = ull(p);
                }
            }
        }
    }
    if (ngpus < MAX_GPUS) gpus[ngpus++] = g;
}

static void add_latency(const char *fn, double p50, double p90, double max) {
    if (nlatencies >= MAX_LATENCIES) return;
    latency_t *l = &latencies[nlatencies++];
    snprintf(l->fn, sizeof l->fn, "%s", fn);
    l->p50 = p50; l->p90 = p90; l->max = max;
}

/* Per call on an H200 (issue 14): the total energy counter p50 2.7-3.0 ms, p90 5.7 ms, max
 * 18.7 ms; utilization, memory, power, clock event reasons, ECC and temperature 0.001-0.007
 * ms; compute process lists 0.01-0.06 ms; everything else 0.001-0.06 ms. */
static void profile_h200(void) {
    add_latency("nvmlDeviceGetTotalEnergyConsumption", 2850, 5700, 18700);
    add_latency("nvmlDeviceGetComputeRunningProcesses_v3", 20, 50, 60);
    add_latency("nvmlDeviceGetComputeRunningProcesses_v2", 20, 50, 60);
    add_latency("nvmlDeviceGetUtilizationRates", 3, 6, 7);
    add_latency("nvmlDeviceGetMemoryInfo", 3, 6, 7);
    add_latency("nvmlDeviceGetPowerUsage", 3, 6, 7);
    add_latency("nvmlDeviceGetCurrentClocksEventReasons", 3, 6, 7);
    add_latency("nvmlDeviceGetTotalEccErrors", 3, 6, 7);
    add_latency("nvmlDeviceGetTemperature", 3, 6, 7);
    add_latency("*", 5, 40, 60);
}

/* A draw from the quantile function of the latency rule for fn, in microseconds (0: none).
 * Called with the lock held. */
static double draw_latency(const char *fn) {
    latency_t *l = NULL;
    for (int i = 0; i < nlatencies; i++) {
        if (!strcmp(latencies[i].fn, fn)) { l = &latencies[i]; break; }
        if (!l && !strcmp(latencies[i].fn, "*")) l = &latencies[i];
    }
    if (!l) return 0;
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    double u = (double)(rng_state >> 11) / 9007199254740992.0; /* [0, 1) */
    double lo = 0.85 * l->p50;
    if (u < 0.5) return lo + (l->p50 - lo) * (u / 0.5);
    if (u < 0.9) return l->p50 + (l->p90 - l->p50) * ((u - 0.5) / 0.4);
    if (u < 0.995) return l->p90 + (l->max - l->p90) * ((u - 0.9) / 0.095);
    return l->max;
}

/* Spins on the thread's CPU clock: the CPU a call costs does not shrink when the machine
 * is busy and the thread is preempted (its wall time grows instead). */
static void spin_us(double us) {
    struct timespec start, now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start);
    do {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    } while ((double)(now.tv_sec - start.tv_sec) * 1e6 + (double)(now.tv_nsec - start.tv_nsec) / 1e3 < us);
}

/* Re-read the script when it changed. Called with the lock held. */
static void load(void) {
    const char *path = getenv("FAKE_NVML_SCRIPT");
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        ngpus = 0; nrules = 0; nlatencies = 0; seen_size = -1;
        return;
    }
    if (st.st_mtim.tv_sec == seen_mtime.tv_sec && st.st_mtim.tv_nsec == seen_mtime.tv_nsec &&
        st.st_ino == seen_ino && st.st_size == seen_size)
        return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    for (int i = 0; i < ngpus && i < MAX_GPUS; i++) xids_delivered_saved[i] = gpus[i].xids_delivered;
    ngpus = 0; nrules = 0; nlatencies = 0;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char word[32] = "";
        int off = 0;
        if (sscanf(line, "%31s %n", word, &off) < 1) continue;
        char *rest = line + off;
        if (!strcmp(word, "gpu")) parse_gpu(rest);
        else if (!strcmp(word, "driver")) sscanf(rest, "%79s", driver);
        else if (!strcmp(word, "latency")) {
            char fn[96];
            double p50, p90, max;
            if (sscanf(rest, "%95s %lf %lf %lf", fn, &p50, &p90, &max) == 4) add_latency(fn, p50, p90, max);
        } else if (!strcmp(word, "latency_profile")) {
            char name[32];
            if (sscanf(rest, "%31s", name) == 1 && !strcmp(name, "h200")) profile_h200();
        }
        else if ((!strcmp(word, "fail") || !strcmp(word, "hang")) && nrules < MAX_RULES) {
            char target[16], fn[96];
            long value;
            if (sscanf(rest, "%15s %95s %ld", target, fn, &value) == 3) {
                rule_t *r = &rules[nrules++];
                r->gpu = strcmp(target, "*") ? atoi(target) : -1;
                snprintf(r->fn, sizeof r->fn, "%s", fn);
                r->value = value;
                r->hang = word[0] == 'h';
            }
        }
    }
    fclose(f);
    for (int i = 0; i < ngpus; i++) {
        gpus[i].xids_delivered = xids_delivered_saved[i];
        if (gpus[i].xids_delivered > gpus[i].nxids) gpus[i].xids_delivered = gpus[i].nxids;
    }
    seen_mtime = st.st_mtim; seen_ino = st.st_ino; seen_size = st.st_size;
}

/* Enter a call: reload, apply hang and fail rules. Returns with the lock held if OK. */
static int enter(const char *fn, gpu_t *g) {
    pthread_mutex_lock(&lock);
    load();
    int idx = g ? (int)(g - gpus) : -1;
    if (g && (idx < 0 || idx >= ngpus)) { pthread_mutex_unlock(&lock); return ERR_INVALID_ARGUMENT; }
    long sleep_ms = 0;
    int code = OK;
    for (int i = 0; i < nrules; i++) {
        if (strcmp(rules[i].fn, fn) || (rules[i].gpu != -1 && rules[i].gpu != idx)) continue;
        if (rules[i].hang) sleep_ms = rules[i].value; else code = (int)rules[i].value;
    }
    double spin = draw_latency(fn);
    if (sleep_ms > 0 || spin > 0) {
        pthread_mutex_unlock(&lock);
        if (spin > 0) spin_us(spin);
        if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);
        pthread_mutex_lock(&lock);
    }
    if (code == OK && strcmp(fn, "nvmlInitWithFlags") && !initialized) code = ERR_UNINITIALIZED;
    if (code != OK) pthread_mutex_unlock(&lock);
    return code;
}

#define ENTER(fn, g) do { int _rc = enter(fn, g); if (_rc) return _rc; } while (0)
#define LEAVE(rc) do { pthread_mutex_unlock(&lock); return rc; } while (0)

static int copy_str(char *dst, unsigned len, const char *src) {
    if (strlen(src) + 1 > len) return ERR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return OK;
}

int nvmlInitWithFlags(unsigned flags) {
    (void)flags;
    ENTER("nvmlInitWithFlags", NULL);
    if (!initialized) clock_gettime(CLOCK_MONOTONIC, &init_time);
    initialized = 1;
    LEAVE(OK);
}
int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
int nvmlShutdown(void) { ENTER("nvmlShutdown", NULL); initialized = 0; LEAVE(OK); }
const char *nvmlErrorString(int rc) {
    switch (rc) {
    case ERR_NOT_SUPPORTED: return "Not Supported";
    case ERR_TIMEOUT: return "Timeout";
    default: return "Fake NVML error";
    }
}
int nvmlSystemGetDriverVersion(char *buf, unsigned len) {
    ENTER("nvmlSystemGetDriverVersion", NULL);
    LEAVE(copy_str(buf, len, driver));
}
int nvmlDeviceGetCount_v2(unsigned *count) {
    ENTER("nvmlDeviceGetCount_v2", NULL);
    *count = (unsigned)ngpus;
    LEAVE(OK);
}
int nvmlDeviceGetHandleByIndex_v2(unsigned index, gpu_t **device) {
    ENTER("nvmlDeviceGetHandleByIndex_v2", NULL);
    for (int i = 0; i < ngpus; i++)
        if (gpus[i].index == index) { *device = &gpus[i]; LEAVE(OK); }
    LEAVE(ERR_INVALID_ARGUMENT);
}
int nvmlDeviceGetIndex(gpu_t *g, unsigned *v) { ENTER("nvmlDeviceGetIndex", g); *v = g->index; LEAVE(OK); }
int nvmlDeviceGetMinorNumber(gpu_t *g, unsigned *v) { ENTER("nvmlDeviceGetMinorNumber", g); *v = g->minor; LEAVE(OK); }
int nvmlDeviceGetUUID(gpu_t *g, char *buf, unsigned len) { ENTER("nvmlDeviceGetUUID", g); LEAVE(copy_str(buf, len, g->uuid)); }
int nvmlDeviceGetName(gpu_t *g, char *buf, unsigned len) { ENTER("nvmlDeviceGetName", g); LEAVE(copy_str(buf, len, g->name)); }

typedef struct {
    char busIdLegacy[16];
    unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} pci_info_t;
int nvmlDeviceGetPciInfo_v3(gpu_t *g, pci_info_t *p) {
    ENTER("nvmlDeviceGetPciInfo_v3", g);
    memset(p, 0, sizeof *p);
    snprintf(p->busId, sizeof p->busId, "%s", g->pci);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%.15s", g->pci);
    LEAVE(OK);
}
typedef struct { unsigned long long total, free, used; } memory_t;
int nvmlDeviceGetMemoryInfo(gpu_t *g, memory_t *m) {
    ENTER("nvmlDeviceGetMemoryInfo", g);
    m->total = g->mem_total; m->used = g->mem_used;
    m->free = g->mem_total > g->mem_used ? g->mem_total - g->mem_used : 0;
    LEAVE(OK);
}
typedef struct { unsigned gpu, memory; } util_t;
int nvmlDeviceGetUtilizationRates(gpu_t *g, util_t *u) {
    ENTER("nvmlDeviceGetUtilizationRates", g);
    u->gpu = g->util; u->memory = g->mem_util;
    LEAVE(OK);
}
int nvmlDeviceGetTemperature(gpu_t *g, int sensor, unsigned *c) {
    (void)sensor;
    ENTER("nvmlDeviceGetTemperature", g);
    if (!g->has_temp) LEAVE(ERR_NOT_SUPPORTED);
    *c = g->temp;
    LEAVE(OK);
}
int nvmlDeviceGetPowerUsage(gpu_t *g, unsigned *mw) { ENTER("nvmlDeviceGetPowerUsage", g); *mw = g->power; LEAVE(OK); }
int nvmlDeviceGetTotalEnergyConsumption(gpu_t *g, unsigned long long *mj) {
    ENTER("nvmlDeviceGetTotalEnergyConsumption", g);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    unsigned long long ms = (unsigned long long)(now.tv_sec - init_time.tv_sec) * 1000ULL +
                            (unsigned long long)((now.tv_nsec - init_time.tv_nsec) / 1000000L);
    *mj = g->energy + g->energy_rate * ms / 1000ULL;
    LEAVE(OK);
}
typedef struct { unsigned pid; unsigned long long usedGpuMemory; unsigned gi, ci; } proc_info_t;
static int procs(const char *fn, gpu_t *g, unsigned *count, proc_info_t *out) {
    ENTER(fn, g);
    unsigned have = *count;
    *count = (unsigned)g->nprocs;
    if (g->nprocs == 0) LEAVE(OK);
    if (!out || have < (unsigned)g->nprocs) LEAVE(ERR_INSUFFICIENT_SIZE);
    for (int i = 0; i < g->nprocs; i++) {
        out[i].pid = g->pids[i]; out[i].usedGpuMemory = g->pmem[i];
        out[i].gi = 0xFFFFFFFFu; out[i].ci = 0xFFFFFFFFu;
    }
    LEAVE(OK);
}
int nvmlDeviceGetComputeRunningProcesses_v3(gpu_t *g, unsigned *c, proc_info_t *o) { return procs("nvmlDeviceGetComputeRunningProcesses_v3", g, c, o); }
int nvmlDeviceGetComputeRunningProcesses_v2(gpu_t *g, unsigned *c, proc_info_t *o) { return procs("nvmlDeviceGetComputeRunningProcesses_v2", g, c, o); }
int nvmlDeviceGetCurrentClocksEventReasons(gpu_t *g, unsigned long long *v) { ENTER("nvmlDeviceGetCurrentClocksEventReasons", g); *v = g->throttle; LEAVE(OK); }
int nvmlDeviceGetCurrentClocksThrottleReasons(gpu_t *g, unsigned long long *v) { ENTER("nvmlDeviceGetCurrentClocksThrottleReasons", g); *v = g->throttle; LEAVE(OK); }
int nvmlDeviceGetTotalEccErrors(gpu_t *g, int type, int counter, unsigned long long *v) {
    (void)counter;
    ENTER("nvmlDeviceGetTotalEccErrors", g);
    *v = type == 0 ? g->ecc_c : g->ecc_u;
    LEAVE(OK);
}

/* Event sets: one global set; XIDs scripted in xids= are delivered once each. */
int nvmlEventSetCreate(void **set) { ENTER("nvmlEventSetCreate", NULL); *set = &event_set_token; LEAVE(OK); }
int nvmlEventSetFree(void *set) { (void)set; ENTER("nvmlEventSetFree", NULL); memset(registered, 0, sizeof registered); LEAVE(OK); }
int nvmlDeviceRegisterEvents(gpu_t *g, unsigned long long types, void *set) {
    (void)set;
    ENTER("nvmlDeviceRegisterEvents", g);
    registered[g - gpus] |= types;
    LEAVE(OK);
}
int nvmlDeviceGetSupportedEventTypes(gpu_t *g, unsigned long long *types) {
    ENTER("nvmlDeviceGetSupportedEventTypes", g);
    *types = 0x8ULL; /* nvmlEventTypeXidCriticalError */
    LEAVE(OK);
}
int nvmlEventSetWait_v2(void *set, event_data_t *data, unsigned timeout_ms) {
    (void)set; (void)timeout_ms;
    ENTER("nvmlEventSetWait_v2", NULL);
    for (int i = 0; i < ngpus; i++) {
        gpu_t *g = &gpus[i];
        if (!(registered[i] & 0x8ULL) || g->xids_delivered >= g->nxids) continue;
        memset(data, 0, sizeof *data);
        data->device = g;
        data->eventType = 0x8ULL;
        data->eventData = g->xids[g->xids_delivered++];
        data->gi = 0xFFFFFFFFu; data->ci = 0xFFFFFFFFu;
        LEAVE(OK);
    }
    LEAVE(ERR_TIMEOUT);
}
