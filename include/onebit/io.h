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

/// Checks the container of a LibTorch archive file (the zip file that `OutputArchive::save_to`
/// writes for checkpoints and model files) before LibTorch reads it. LibTorch's reader trusts the
/// sizes in the zip directory and allocates them, so a corrupt size would ask for gigabytes;
/// here the end-of-central-directory record (zip64 too) is found, and every entry must be stored
/// or deflated (as LibTorch writes them) with its data inside the file and a size that its stored
/// bytes can hold, a local header that names it, pickles (`*.pkl`) whose opcodes fit, and data
/// whose CRC-32 matches the directory's (LibTorch skips that check and would parse damaged
/// TorchScript code). Reads the file once, in 64 KiB chunks. Throws std::runtime_error naming the
/// file and what is wrong.
void check_torch_archive(const std::string& path);

}  // namespace onebit::io
