// emu_main.cpp: run one emitted network under cuda_emu.h.
//
//   g++ -std=c++17 -O1 -I<emu> -I<network folder> \
//       -DRESNETC_HOST='"NAME_host.cu"' emu_main.cpp -lboost_context -o emu
//   ./emu NAME.weights x.f32 y.f32 [dump folder]
//
// x.f32 and y.f32 are raw little-endian f32 (the input NCHW, the output as
// the entry point writes it). With a dump folder, each launch's output
// bytes go to DUMP/<launch>.bin as it finishes (the arena's elements).
#include "cuda_emu.h"

#include <string>

static const char* g_dump = nullptr;
static const char* g_arena = nullptr;
void rc_after(int i);
#define RC_AFTER(i) rc_after(i)

#include RESNETC_HOST

static std::vector<char> read_all(const char* path) {
    std::FILE* f = std::fopen(path, "rb");
    if (!f) emu::fail("cannot read a file given");
    std::vector<char> v;
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    std::fclose(f);
    return v;
}

static void write_all(const std::string& path, const void* p, size_t n) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(p, 1, n, f) != n) emu::fail("cannot write an output file");
    std::fclose(f);
}

void rc_after(int i) {
    if (!g_dump || RC_WRITES[i][1] == 0) return;
    write_all(std::string(g_dump) + "/" + std::to_string(i) + ".bin", g_arena + RC_WRITES[i][0],
              (size_t)RC_WRITES[i][1]);
}

// 256-byte aligned storage, as device allocations are.
static char* aligned(size_t bytes) {
    size_t n = (bytes + 255) / 256 * 256;
    char* p = (char*)std::aligned_alloc(256, n > 0 ? n : 256);
    if (!p) emu::fail("out of memory");
    std::memset(p, 0, n);
    return p;
}

int main(int argc, char** argv) {
    if (argc < 4) emu::fail("usage: emu WEIGHTS X Y [DUMP]");
    std::vector<char> wf = read_all(argv[1]), xf = read_all(argv[2]);
    if (wf.size() != (size_t)RC_WEIGHT_BYTES) emu::fail("the weights file has the wrong size");
    if (xf.size() != (size_t)RC_INPUT_ELEMS * 4) emu::fail("the input file has the wrong size");
    char* w = aligned(wf.size());
    std::memcpy(w, wf.data(), wf.size());
    float* x = (float*)aligned(xf.size());
    std::memcpy(x, xf.data(), xf.size());
    float* y = (float*)aligned((size_t)RC_OUTPUT_ELEMS * 4);
    char* a = aligned(RC_WORKSPACE_BYTES);
    g_arena = a;
    if (argc > 4) g_dump = argv[4];
    int r = RC_FORWARD(w, x, y, a, nullptr);
    if (r != 0) emu::fail("the forward pass returned %d", r);
    write_all(argv[3], y, (size_t)RC_OUTPUT_ELEMS * 4);
    return 0;
}
