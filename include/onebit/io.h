#pragma once
/// \file
/// Atomic file writes: a temporary file in the target's directory, then a rename, so readers
/// never see a half-written checkpoint or model.

#include <functional>
#include <string>

namespace onebit::io {

/// Calls `write(tmp_path)` to fill a temporary file next to `path`, then renames it onto `path`.
/// On any exception the temporary file is removed and `path` is left as it was.
void atomic_write(const std::string& path, const std::function<void(const std::string&)>& write);

/// Writes `text` to `path` atomically.
void atomic_write_text(const std::string& path, const std::string& text);

}  // namespace onebit::io
