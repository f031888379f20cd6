// WalCheckpointer: runs SQLite WAL checkpoints on a background thread, on
// its own connection, instead of inside a writer's COMMIT.
//
// Why: with the default auto-checkpoint, the commit that pushes the WAL past
// 1000 pages copies the WAL back into the database and, with synchronous=
// NORMAL, fsyncs both files before it returns. On slow disks that one
// commit then takes from tens of milliseconds to seconds, and the whole
// pipeline waits behind it. Here the writer's commit only notes the WAL
// size (sqlite3_wal_hook, which also turns SQLite's auto-checkpoint off for
// that connection) and wakes this thread, which runs a PASSIVE checkpoint:
// it never blocks writers or readers, and copies what no reader still needs.
// Durability is unchanged: a commit's durability never depended on the
// checkpoint (WAL + synchronous=NORMAL survives a process crash; FULL syncs
// the WAL in every commit).
//
// A background checkpoint cannot let the WAL start over while commits keep
// appending to it (SQLite restarts the WAL only when a write transaction
// begins on a fully copied one). So once the WAL reaches kHardFactor x pages
// the commit itself checkpoints, as SQLite would by default: by then the
// background passes have copied and synced most of it, and the WAL stays
// bounded under sustained load.
//
// Thread-safety: attach/stop are called by the writer's thread; the hook runs
// on it too (inside COMMIT); the thread uses only its own connection.
#pragma once

#include "common/sqlite.hpp"

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace cdcflow::sqlite {

class WalCheckpointer {
public:
    using Log = std::function<void(const std::string &)>;

    WalCheckpointer() = default;
    WalCheckpointer(const WalCheckpointer &) = delete;
    WalCheckpointer &operator=(const WalCheckpointer &) = delete;
    ~WalCheckpointer() { stop(); }

    // Checkpoint `writer`'s database in the background once its WAL holds
    // at least `pages` pages. log receives failures other than "busy".
    void attach(Db &writer, int pages, Log log) {
        stop();
        pages_ = pages < 1 ? 1 : (pages > INT32_MAX / kHardFactor ? INT32_MAX / kHardFactor : pages);
        log_ = std::move(log);
        // Its own connection, opened here (not in the thread) so that a
        // failure to open is the caller's error at start.
        conn_ = Db(writer.path(), SQLITE_OPEN_READWRITE, 100);
        writer_ = writer.raw();
        stopping_ = false;
        requested_ = false;
        thread_ = std::thread([this] { run(); });
        sqlite3_wal_hook(writer_, &WalCheckpointer::hook, this);
    }

    void stop() {
        if (!thread_.joinable()) return;
        sqlite3_wal_hook(writer_, nullptr, nullptr);
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        cv_.notify_one();
        thread_.join();
        conn_ = Db();
        writer_ = nullptr;
    }

    // Checkpoints run so far (tests, metrics).
    uint64_t runs() const {
        std::lock_guard lock(mu_);
        return runs_;
    }

private:
    static constexpr int kHardFactor = 8;

    static int hook(void *self, sqlite3 *db, const char *name, int wal_pages) {
        auto *me = static_cast<WalCheckpointer *>(self);
        if (wal_pages >= me->pages_ * kHardFactor) {
            // Busy (the background pass is running): the next commit retries.
            sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
        } else if (wal_pages >= me->pages_) {
            {
                std::lock_guard lock(me->mu_);
                me->requested_ = true;
            }
            me->cv_.notify_one();
        }
        return SQLITE_OK;
    }

    void run() {
        std::unique_lock lock(mu_);
        for (;;) {
            cv_.wait(lock, [&] { return requested_ || stopping_; });
            if (stopping_) return;
            requested_ = false;
            lock.unlock();
            int rc =
                sqlite3_wal_checkpoint_v2(conn_.raw(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
            // Busy: another checkpoint is running (the application's own, say);
            // the next commit asks again.
            if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED && log_)
                log_("background WAL checkpoint of '" + conn_.path() +
                     "' failed: " + sqlite3_errmsg(conn_.raw()));
            lock.lock();
            ++runs_;
        }
    }

    int pages_ = 1000;
    Log log_;
    Db conn_;
    sqlite3 *writer_ = nullptr;
    std::thread thread_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool requested_ = false;
    bool stopping_ = false;
    uint64_t runs_ = 0;
};

} // namespace cdcflow::sqlite
