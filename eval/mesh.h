/* eval/mesh.h : surface meshes of binary masks for the 3D report pages: marching cubes
 * (the case table is derived at start-up from the cube's faces, see mesh.c), Taubin
 * smoothing and vertex-clustering decimation. Meshes are welded (one vertex per crossed
 * grid edge), closed, and wound counter-clockwise seen from outside the mask. */
#ifndef SEG_MESH_H
#define SEG_MESH_H
#include <stdint.h>

typedef struct Mesh {
    int       nv, nt;     /* vertices, triangles */
    float    *v;          /* [3*nv] x y z; owned */
    uint32_t *t;          /* [3*nt] vertex indices; owned */
} Mesh;

void mesh_free(Mesh *m);  /* NULL-safe, leaves m zeroed */

/* Iso-surface f = iso of a float field f[nx*ny*nz] (x fastest); vertices in index
 * coordinates, interpolated linearly along the crossed edges. Values > iso are inside. */
int  mesh_march(const float *f, int nx, int ny, int nz, float iso, Mesh *out);

/* Mesh of a packed binary mask: nz planes (NULL = empty, maskpack.h) of nx x ny pixels,
 * pixel p = y*nx + x. Marching cubes at 0.5 on the mask's bounding box
 * (padded with background so the surface is closed), vertices mapped voxel -> world with
 * affine, then smooth_iters Taubin steps (0: none). An empty mask gives an empty mesh. */
int  mesh_from_planes(const uint8_t *const *planes, int nx, int ny, int nz, const double affine[4][4],
                      int smooth_iters, Mesh *out);

/* Taubin lambda/mu smoothing (shrink-free), iters steps, in place. */
int  mesh_smooth(Mesh *m, int iters);
/* Vertex clustering on a grid of cell (same units as the vertices): vertices in a cell
 * merge to their mean; collapsed triangles are dropped. cell <= 0: no-op. */
int  mesh_decimate(Mesh *m, double cell);

/* Checks for tests: directed edges without their opposite twin (0 for a closed,
 * consistently wound mesh), and the enclosed volume (divergence theorem, signed:
 * positive for outward winding). */
int64_t mesh_open_edges(const Mesh *m);
double  mesh_volume(const Mesh *m);

/* Triangles of marching-cubes case cfg (corner i = (i&1, i>>1&1, i>>2&1) inside when bit
 * i is set): up to 12 triangles of cube-edge indices into tri; returns the count. Edge e
 * joins corners mesh_edge_corners[e][0..1]. */
int  mesh_case(int cfg, int tri[][3]);
extern const int mesh_edge_corners[12][2];

#endif
