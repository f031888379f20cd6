// See process.hpp.
#include "process.hpp"

#include <cerrno>
#include <charconv>
#include <fcntl.h>
#include <string_view>
#include <unistd.h>

namespace cdcflow::base {

uint64_t resident_bytes() noexcept {
    // statm: "size resident shared text lib data dt", in pages. Read with
    // plain syscalls: no stream state, no allocation.
    int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[128];
    ssize_t n;
    do {
        n = ::read(fd, buf, sizeof buf - 1);
    } while (n < 0 && errno == EINTR);
    ::close(fd);
    if (n <= 0) return 0;
    std::string_view text(buf, static_cast<size_t>(n));
    size_t space = text.find(' ');
    if (space == std::string_view::npos) return 0;
    text.remove_prefix(space + 1);
    uint64_t pages = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pages);
    if (ec != std::errc() || end == text.data()) return 0;
    long page = ::sysconf(_SC_PAGESIZE);
    return page > 0 ? pages * static_cast<uint64_t>(page) : 0;
}

} // namespace cdcflow::base
