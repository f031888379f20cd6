#include "uuid5.hpp"

#include <boost/uuid/name_generator_sha1.hpp>
#include <boost/uuid/uuid.hpp>

#include <charconv>
#include <cstring>

namespace cdcflow::migrate {

namespace {

constexpr char kHex[] = "0123456789abcdef";

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool dash_at(size_t i) {
    return i == 8 || i == 13 || i == 18 || i == 23;
}

void write_text(const uint8_t *b, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = kHex[b[i] >> 4];
        out[o++] = kHex[b[i] & 0xf];
    }
}

} // namespace

std::optional<Uuid> parse_uuid(std::string_view text) {
    if (text.size() != kUuidTextSize) return std::nullopt;
    Uuid u{};
    size_t nibble = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        if (dash_at(i)) {
            if (text[i] != '-') return std::nullopt;
            continue;
        }
        int v = hex_value(text[i]);
        if (v < 0) return std::nullopt;
        u[nibble / 2] = static_cast<uint8_t>(u[nibble / 2] | (nibble % 2 ? v : v << 4));
        ++nibble;
    }
    return u;
}

std::string uuid_text(const Uuid &u) {
    std::string s(kUuidTextSize, '\0');
    write_text(u.data(), s.data());
    return s;
}

void uuid5(const Uuid &ns, std::string_view name, char *out) {
    boost::uuids::uuid bns;
    std::memcpy(bns.data, ns.data(), 16);
    boost::uuids::name_generator_sha1 gen(bns);
    boost::uuids::uuid u = gen(name.data(), name.size());
    write_text(u.data, out);
}

void legacy_event_id(const Uuid &ns, int64_t legacy_id, char *out) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, legacy_id);
    (void)ec; // 24 bytes hold every int64_t
    uuid5(ns, std::string_view(digits, static_cast<size_t>(end - digits)), out);
}

bool looks_like_uuid5(std::string_view id) {
    if (id.size() != kUuidTextSize) return false;
    for (size_t i = 0; i < id.size(); ++i)
        if (dash_at(i) ? id[i] != '-' : hex_value(id[i]) < 0) return false;
    // Version nibble 5; variant 10xx (8, 9, a, b).
    const char variant = id[19];
    return id[14] == '5' && (variant == '8' || variant == '9' || variant == 'a' || variant == 'b' ||
                             variant == 'A' || variant == 'B');
}

} // namespace cdcflow::migrate
