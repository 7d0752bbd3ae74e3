/* tests/test_mesh.c : the derived marching-cubes table and the mesh helpers.
 * Every one of the 256 cases alone, and seeded random fields, must give closed meshes
 * with every edge shared by two oppositely wound triangles and a positive volume; a
 * voxelised ball's mesh must enclose about the ball's volume, also after an affine,
 * smoothing and decimation. usage: test_mesh [SEED] */
#include "err.h"
#include "maskpack.h"
#include "mesh.h"
#include "testutil.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void check_all_cases(void)
{
    int bad = 0, max_t = 0, total = 0, first_bad = -1;
    for (int cfg = 0; cfg < 256; cfg++) {
        float f[4 * 4 * 4] = { 0 };
        for (int c = 0; c < 8; c++)
            if (cfg >> c & 1) f[((1 + (c >> 2 & 1)) * 4 + 1 + (c >> 1 & 1)) * 4 + 1 + (c & 1)] = 1.f;
        Mesh m;
        int rc = mesh_march(f, 4, 4, 4, 0.5f, &m);
        int tri[12][3];
        int nt = mesh_case(cfg, tri);
        if (nt > max_t) max_t = nt;
        total += nt;
        int64_t open = mesh_open_edges(&m);
        double vol = mesh_volume(&m);
        if (rc || open != 0 || (cfg && !(vol > 0)) || (!cfg && m.nt)) { if (first_bad < 0) first_bad = cfg; bad++; }
        mesh_free(&m);
    }
    int tri[12][3];
    CHECK(mesh_case(0, tri) == 0 && mesh_case(255, tri) == 0, "cases 0 and 255 are empty");
    CHECK(mesh_case(1, tri) == 1 && mesh_case(3, tri) == 2, "one corner: 1 triangle, one edge: 2 triangles");
    CHECK(bad == 0, "all 256 cases closed and outward (bad %d, first %d); table: %d triangles, at most %d per case",
          bad, first_bad, total, max_t);
}

static void check_random_fields(uint64_t *seed)
{
    for (int trial = 0; trial < 20; trial++) {
        int nx = 3 + (int)(t_rand(seed) % 14), ny = 3 + (int)(t_rand(seed) % 14), nz = 3 + (int)(t_rand(seed) % 10);
        int dens = 10 + (int)(t_rand(seed) % 70);
        float *f = calloc((size_t)nx * ny * nz, sizeof *f);
        for (int z = 1; z < nz - 1; z++)
            for (int y = 1; y < ny - 1; y++)
                for (int x = 1; x < nx - 1; x++)
                    f[((size_t)z * ny + y) * nx + x] = (int)(t_rand(seed) % 100) < dens ? (float)(t_rand(seed) % 1000) / 1000.f + 0.5f
                                                                                      : (float)(t_rand(seed) % 500) / 1000.f;
        Mesh m;
        int rc = mesh_march(f, nx, ny, nz, 0.5f, &m);
        int64_t open = mesh_open_edges(&m);
        CHECK(rc == 0 && open == 0 && (m.nt == 0 || mesh_volume(&m) > 0),
              "random field %dx%dx%d density %d%%: %d vertices %d triangles, open edges %lld, volume %.2f",
              nx, ny, nz, dens, m.nv, m.nt, (long long)open, mesh_volume(&m));
        mesh_free(&m);
        free(f);
    }
}

static void check_ball(void)
{
    const int n = 40;
    const double r = 14.0;
    const size_t pb = maskpack_plane_bytes((size_t)n * n);
    uint8_t **planes = calloc(n, sizeof *planes);
    long count = 0;
    for (int z = 0; z < n; z++) {
        planes[z] = calloc(pb, 1);
        for (int y = 0; y < n; y++)
            for (int x = 0; x < n; x++) {
                double dx = x - 19.5, dy = y - 19.5, dz = z - 19.5;
                if (dx * dx + dy * dy + dz * dz <= r * r) {
                    size_t i = (size_t)y * n + x;
                    maskpack_set(planes[z], i);
                    count++;
                }
            }
    }
    /* anisotropic, mirrored affine (like the cache's L, P, S axes) */
    const double sp[3] = { 0.8, 1.2, 2.0 };
    double aff[4][4] = { { -sp[0], 0, 0, 10 }, { 0, -sp[1], 0, -5 }, { 0, 0, sp[2], 3 }, { 0, 0, 0, 1 } };
    const double vox = sp[0] * sp[1] * sp[2], want = count * vox;
    Mesh m;
    int rc = mesh_from_planes((const uint8_t *const *)planes, n, n, n, aff, 0, &m);
    double v0 = mesh_volume(&m);
    CHECK(rc == 0 && mesh_open_edges(&m) == 0 && fabs(v0 - want) < 0.03 * want,
          "ball r=%g voxels: %d triangles, closed, volume %.0f mm^3 vs voxels %.0f (%.2f%%)", r, m.nt, v0, want,
          100 * (v0 - want) / want);
    Mesh s;
    rc = mesh_from_planes((const uint8_t *const *)planes, n, n, n, aff, 4, &s);
    double v1 = mesh_volume(&s);
    CHECK(rc == 0 && mesh_open_edges(&s) == 0 && fabs(v1 - want) < 0.03 * want,
          "Taubin smoothed: volume %.0f (%.2f%%), still closed", v1, 100 * (v1 - want) / want);
    int nt0 = s.nt;
    rc = mesh_decimate(&s, 2.5);
    double v2 = mesh_volume(&s);
    CHECK(rc == 0 && s.nt < nt0 / 2 && fabs(v2 - want) < 0.05 * want,
          "decimated at 2.5 mm: %d -> %d triangles, volume %.0f (%.2f%%)", nt0, s.nt, v2, 100 * (v2 - want) / want);
    uint8_t *none[3] = { NULL, NULL, NULL };
    Mesh e;
    CHECK(mesh_from_planes((const uint8_t *const *)none, 4, 4, 3, aff, 2, &e) == 0 && e.nt == 0 && e.nv == 0,
          "empty mask: empty mesh");
    mesh_free(&m); mesh_free(&s); mesh_free(&e);
    for (int z = 0; z < n; z++) free(planes[z]);
    free(planes);
}

int main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : (uint64_t)time(NULL);
    printf("test_mesh seed=%llu\n", (unsigned long long)seed);
    check_all_cases();
    check_random_fields(&seed);
    check_ball();
    return t_report("test_mesh");
}
