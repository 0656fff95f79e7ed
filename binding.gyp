{
  # libfcgi is compiled from upstream source fetched by scripts/fetch-libfcgi.mjs
  # into deps/libfcgi (never committed), with native/patches applied, as a
  # static position-independent library linked into the addon: the .node file
  # needs no system libfcgi at run time.
  "variables": {
    "libfcgi_dir": "deps/libfcgi",
    # 1: AddressSanitizer + UndefinedBehaviorSanitizer build of both targets
    # (scripts/build-asan.sh passes --libfcgi_sanitize=1 to node-gyp and builds
    # in build-asan/, so build/ stays the normal build). Node itself is not
    # instrumented: scripts/test-asan.sh preloads the sanitizer runtimes.
    "libfcgi_sanitize%": 0
  },
  "target_defaults": {
    "conditions": [
      ["libfcgi_sanitize==1", {
        # -O1 and frame pointers keep the reports' stacks readable; -g gives
        # file:line. cflags apply to C and C++ (libfcgi and the addon).
        "cflags": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"],
        "ldflags": ["-fsanitize=address,undefined"]
      }]
    ]
  },
  "targets": [
    {
      "target_name": "fcgi_static",
      "type": "static_library",
      "sources": [
        "<(libfcgi_dir)/libfcgi/fcgiapp.c",
        "<(libfcgi_dir)/libfcgi/os_unix.c"
      ],
      "include_dirs": ["native", "<(libfcgi_dir)/include"],
      "cflags": ["-fPIC", "-fvisibility=hidden", "-Wno-unused-parameter", "-Wno-sign-compare",
                 "-Wno-unused-but-set-variable", "-Wno-implicit-fallthrough", "-Wno-unused-function"],
      "xcode_settings": { "OTHER_CFLAGS": ["-fPIC", "-fvisibility=hidden"] },
      "direct_dependent_settings": {
        "include_dirs": ["native", "<(libfcgi_dir)/include"]
      }
    },
    {
      "target_name": "fcgi",
      "dependencies": ["fcgi_static"],
      "sources": ["native/addon.cc", "native/server.cc", "native/listener.cc", "native/wire.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"
      ],
      "cflags": ["-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "MACOSX_DEPLOYMENT_TARGET": "11.0"
      }
    }
  ]
}
