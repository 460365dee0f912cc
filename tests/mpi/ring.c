/*
 * The MPI ring of tests/tests/slurm.rs (issue 14), compiled on the host with mpicc by
 * scripts/make-mpi-image.sh and run inside the packed MPI image as /ring.
 *
 * Every rank sends 1 MiB to its right neighbour and receives 1 MiB from its left one
 * (MPI_Sendrecv), ITERATIONS times, each message filled with a pattern that names its
 * sender and the iteration, and checks every byte it gets. Then a token goes once around
 * the ring (rank 0 -> 1 -> ... -> 0), each rank adding its rank to it.
 *
 * With RING_CMA=1 in its environment, each rank then reads its right neighbour's pattern
 * straight from that process's memory with process_vm_readv (what Open MPI's CMA single
 * copy does), the neighbour's pid and buffer address exchanged over MPI, and prints
 * "cma ok: rank R read rank N" (or "CMA FAILED: ..."): Open MPI falls back to copying through
 * shared memory when CMA fails, so the ring alone would not show it.
 *
 * Output: one line per rank, "rank R of N on HOST pid PID: ok", and from rank 0 a final
 * "ring ok N ranks". Any mismatch is printed ("rank R: MISMATCH ...") and makes every rank
 * exit 1; an MPI error aborts (MPI_ERRORS_ARE_FATAL).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <mpi.h>
#include <stdint.h>
#include <sys/uio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MESSAGE_BYTES (1024 * 1024)
#define ITERATIONS 4

static unsigned char pattern(int sender, int iteration, size_t i)
{
    return (unsigned char)((i * 131u) ^ ((unsigned)sender * 7u) ^ ((unsigned)iteration * 29u) ^ (i >> 12));
}

int main(int argc, char **argv)
{
    int rank, size, errors = 0, total_errors = 0;
    char host[256] = "?";

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    gethostname(host, sizeof host - 1);

    int right = (rank + 1) % size;
    int left = (rank + size - 1) % size;
    unsigned char *out = malloc(MESSAGE_BYTES);
    unsigned char *in = malloc(MESSAGE_BYTES);
    if (!out || !in) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    for (int it = 0; it < ITERATIONS; it++) {
        for (size_t i = 0; i < MESSAGE_BYTES; i++)
            out[i] = pattern(rank, it, i);
        memset(in, 0, MESSAGE_BYTES);
        MPI_Sendrecv(out, MESSAGE_BYTES, MPI_BYTE, right, it, in, MESSAGE_BYTES, MPI_BYTE, left, it,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        for (size_t i = 0; i < MESSAGE_BYTES; i++) {
            if (in[i] != pattern(left, it, i)) {
                fprintf(stderr, "rank %d: MISMATCH in iteration %d at byte %zu from rank %d: got %u, expected %u\n",
                        rank, it, i, left, in[i], pattern(left, it, i));
                errors++;
                break;
            }
        }
    }

    /* The token: rank 0 starts it at 0, each rank adds its own rank. */
    long token = 0;
    if (size > 1) {
        if (rank == 0) {
            MPI_Send(&token, 1, MPI_LONG, right, 1000, MPI_COMM_WORLD);
            MPI_Recv(&token, 1, MPI_LONG, left, 1000, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            long expected = (long)size * (size - 1) / 2;
            if (token != expected) {
                fprintf(stderr, "rank 0: MISMATCH token came back as %ld, expected %ld\n", token, expected);
                errors++;
            }
        } else {
            MPI_Recv(&token, 1, MPI_LONG, left, 1000, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            token += rank;
            MPI_Send(&token, 1, MPI_LONG, right, 1000, MPI_COMM_WORLD);
        }
    }

    const char *cma = getenv("RING_CMA");
    if (cma && strcmp(cma, "1") == 0 && size > 1) {
        /* out holds pattern(rank, ITERATIONS - 1, i); tell the left neighbour where. */
        long mine[2] = {(long)getpid(), (long)(uintptr_t)out};
        long theirs[2] = {0, 0};
        MPI_Sendrecv(mine, 2, MPI_LONG, left, 2000, theirs, 2, MPI_LONG, right, 2000,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        memset(in, 0, MESSAGE_BYTES);
        struct iovec local = {in, MESSAGE_BYTES};
        struct iovec remote = {(void *)(uintptr_t)theirs[1], MESSAGE_BYTES};
        ssize_t got = process_vm_readv((pid_t)theirs[0], &local, 1, &remote, 1, 0);
        if (got != MESSAGE_BYTES) {
            printf("CMA FAILED: rank %d reading rank %d (pid %ld): %s\n", rank, right, theirs[0],
                   got < 0 ? strerror(errno) : "short read");
            errors++;
        } else {
            size_t bad = 0;
            for (size_t i = 0; i < MESSAGE_BYTES; i++)
                bad += in[i] != pattern(right, ITERATIONS - 1, i);
            if (bad)
                printf("CMA FAILED: rank %d: %zu bytes of rank %d differ\n", rank, bad, right);
            else
                printf("cma ok: rank %d read rank %d\n", rank, right);
            errors += bad != 0;
        }
        fflush(stdout);
        /* Nobody frees its buffer before its neighbour has read it. */
        MPI_Barrier(MPI_COMM_WORLD);
    }

    MPI_Allreduce(&errors, &total_errors, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d of %d on %s pid %ld: %s\n", rank, size, host, (long)getpid(),
           errors ? "MISMATCH" : "ok");
    fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        if (total_errors == 0)
            printf("ring ok %d ranks\n", size);
        else
            printf("ring FAILED: %d mismatches\n", total_errors);
        fflush(stdout);
    }
    free(out);
    free(in);
    MPI_Finalize();
    return total_errors ? 1 : 0;
}
