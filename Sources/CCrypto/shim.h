// OpenSSL's libcrypto for the endpoint's chunk digests: EVP uses the CPU's
// SHA extensions where there are some (several times the SHA256 module's portable SHA-256).
#ifndef CCRYPTO_SHIM_H
#define CCRYPTO_SHIM_H
#include <openssl/evp.h>
#endif
