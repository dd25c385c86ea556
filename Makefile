# The two commands a newcomer runs: `make demo` and `make test`. Both install
# what is missing (scripts/deps.sh, by Debian package name), build with CMake
# and run. Build trees live in build/ (normal), build-asan/ and build-tsan/.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build demo test test-normal test-asan test-tsan bench install clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build build -j $(JOBS)

demo: build
	./build/examples/prime_threads

# The whole suite three times: normal build (gcc), ASan+UBSan (clang, which
# also builds and runs the libFuzzer targets), TSan (clang).
test: deps
	$(MAKE) test-normal
	$(MAKE) test-asan
	$(MAKE) test-tsan
	@echo "make test: normal, asan and tsan suites passed"

test-normal: build
	cd build && ctest --output-on-failure -j 2

test-asan: deps
	CC=clang cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCREW_SANITIZE=address $(CMAKE_FLAGS) >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 2

test-tsan: deps
	CC=clang cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCREW_SANITIZE=thread $(CMAKE_FLAGS) >/dev/null
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -j 2

bench: build
	./build/bench/bench_sync
	./build/bench/bench_queue
	./build/bench/bench_conn
	./build/bench/bench_pool
	./build/bench/bench_proc

install: build
	cmake --install build

clean:
	rm -rf build build-asan build-tsan
