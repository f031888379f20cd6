// SipHash-2-4 with 128-bit output (Aumasson & Bernstein, reference
// https://github.com/veorq/SipHash): event id fingerprints (the deduper) and
// the migration's per-row checksums (core/migrate).
//
// Why a keyed PRF and not a plain fast hash: event ids come from
// applications. With an unkeyed or weakly seeded hash (murmur-style hashes
// have seed-independent collisions), someone who can write ids could craft
// two different ids with the same fingerprint and get a legitimate event
// dropped as a "duplicate". With a secret random key, 128 output bits make
// an accidental or crafted collision negligible (about n^2 / 2^129 for n ids).
// Cost: about 30-60 ns for a 36-byte UUID, far below everything else per event.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string_view>

namespace cdcflow::base {

struct SipKey {
    uint64_t k0 = 0, k1 = 0;

    // A fresh key from the OS entropy source.
    static SipKey random() {
        std::random_device rd;
        auto word = [&rd] { return (static_cast<uint64_t>(rd()) << 32) ^ rd(); };
        return SipKey{word(), word()};
    }
};

// 128 bits as two 64-bit words: `lo` is the first 8 output bytes read
// little-endian, `hi` the last 8 (the reference's byte order).
struct Hash128 {
    uint64_t lo = 0, hi = 0;
    bool operator==(const Hash128 &) const = default;
};

namespace detail {

inline uint64_t rotl(uint64_t x, int b) {
    return (x << b) | (x >> (64 - b));
}

inline uint64_t load_le64(const unsigned char *p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

struct SipState {
    uint64_t v0, v1, v2, v3;
    void round() {
        v0 += v1;
        v1 = rotl(v1, 13);
        v1 ^= v0;
        v0 = rotl(v0, 32);
        v2 += v3;
        v3 = rotl(v3, 16);
        v3 ^= v2;
        v0 += v3;
        v3 = rotl(v3, 21);
        v3 ^= v0;
        v2 += v1;
        v1 = rotl(v1, 17);
        v1 ^= v2;
        v2 = rotl(v2, 32);
    }
};

} // namespace detail

inline Hash128 siphash128(std::string_view data, const SipKey &key) noexcept {
    const auto *p = reinterpret_cast<const unsigned char *>(data.data());
    const size_t len = data.size();
    detail::SipState s{0x736f6d6570736575ULL ^ key.k0, 0x646f72616e646f6dULL ^ key.k1 ^ 0xee,
                       0x6c7967656e657261ULL ^ key.k0, 0x7465646279746573ULL ^ key.k1};

    const unsigned char *end = p + (len & ~size_t{7});
    for (; p != end; p += 8) {
        uint64_t m = detail::load_le64(p);
        s.v3 ^= m;
        s.round();
        s.round();
        s.v0 ^= m;
    }
    // The last 0..7 bytes, with the length's low byte on top.
    uint64_t b = static_cast<uint64_t>(len) << 56;
    for (size_t i = 0; i < (len & 7); ++i)
        b |= static_cast<uint64_t>(p[i]) << (8 * i);
    s.v3 ^= b;
    s.round();
    s.round();
    s.v0 ^= b;

    s.v2 ^= 0xee;
    for (int i = 0; i < 4; ++i)
        s.round();
    Hash128 h;
    h.lo = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
    s.v1 ^= 0xdd;
    for (int i = 0; i < 4; ++i)
        s.round();
    h.hi = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
    return h;
}

} // namespace cdcflow::base
