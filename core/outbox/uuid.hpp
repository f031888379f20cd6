// UuidGenerator: random (version 4) UUIDs for events that come without an id
// (internal to core/outbox).
//
// xoshiro256** seeded with 256 bits from std::random_device (the kernel's
// CSPRNG on Linux): fast enough for millions of ids per second, and two
// writers (or processes) collide only with the usual 2^-122 odds. Not
// cryptographic: ids are unique, not secret.
//
// Thread-safety: one thread. A generator (like the SQLite connection it comes
// with) must not be used on both sides of a fork(): the child would repeat the
// parent's ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>

namespace cdcflow::outbox {

class UuidGenerator {
public:
    static constexpr size_t kTextSize = 36; // 8-4-4-4-12 hex digits

    UuidGenerator() {
        std::random_device rd;
        for (uint64_t &w : s_)
            w = (uint64_t{rd()} << 32) ^ rd();
        if ((s_[0] | s_[1] | s_[2] | s_[3]) == 0) s_[0] = 1; // the one state xoshiro must avoid
    }

    // Writes the canonical lowercase form (no NUL) into out[0..36).
    void next(char *out) {
        uint64_t hi = step(), lo = step();
        hi = (hi & ~0xf000ULL) | 0x4000ULL;               // version 4 (RFC 4122 4.4)
        lo = (lo & 0x3fffffffffffffffULL) | (1ULL << 63); // variant 10xx
        static constexpr char kHex[] = "0123456789abcdef";
        int shift = 60;
        size_t o = 0;
        for (int i = 0; i < 32; ++i) {
            if (i == 8 || i == 12 || i == 16 || i == 20) out[o++] = '-';
            uint64_t w = i < 16 ? hi : lo;
            out[o++] = kHex[(w >> shift) & 0xf];
            shift = shift == 0 ? 60 : shift - 4;
        }
    }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    uint64_t step() {
        uint64_t result = rotl(s_[1] * 5, 7) * 9;
        uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }
    uint64_t s_[4];
};

} // namespace cdcflow::outbox
