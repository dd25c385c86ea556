/* Tests for error.h: every CREW_E* code has its own message and name, codes
 * mirror errno where one fits, and unknown codes get the documented fallbacks. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "crew/error.h"

typedef struct err_entry {
    int code;
    const char *name;    /* "CREW_EINVAL" */
    const char *message; /* from CREW_ERRNO_MAP */
} err_entry;

static const err_entry all_codes[] = {
#define TEST_ERR_ENTRY(name, value, msg) { CREW_##name, "CREW_" #name, msg },
    CREW_ERRNO_MAP(TEST_ERR_ENTRY)
#undef TEST_ERR_ENTRY
};

enum { n_codes = sizeof all_codes / sizeof all_codes[0] };

static void test_every_code_has_message_and_name(void **state) {
    (void)state;
    assert_true(n_codes >= 27);
    for (size_t i = 0; i < n_codes; i++) {
        const err_entry *e = &all_codes[i];
        assert_true(e->code < 0);
        const char *msg = crew_strerror(e->code);
        assert_non_null(msg);
        assert_string_not_equal(msg, "");
        assert_string_not_equal(msg, "unknown error");
        assert_string_equal(msg, e->message);
        const char *name = crew_err_name(e->code);
        assert_non_null(name);
        assert_string_equal(name, e->name);
        assert_int_equal(strncmp(name, "CREW_E", 6), 0);
    }
}

static void test_codes_and_messages_distinct(void **state) {
    (void)state;
    for (size_t i = 0; i < n_codes; i++) {
        for (size_t j = i + 1; j < n_codes; j++) {
            assert_int_not_equal(all_codes[i].code, all_codes[j].code);
            assert_string_not_equal(crew_strerror(all_codes[i].code),
                                    crew_strerror(all_codes[j].code));
            assert_string_not_equal(crew_err_name(all_codes[i].code),
                                    crew_err_name(all_codes[j].code));
        }
    }
}

static void test_codes_mirror_errno(void **state) {
    (void)state;
    assert_int_equal(CREW_EINVAL, -EINVAL);
    assert_int_equal(CREW_ENOMEM, -ENOMEM);
    assert_int_equal(CREW_EAGAIN, -EAGAIN);
    assert_int_equal(CREW_ETIMEDOUT, -ETIMEDOUT);
    assert_int_equal(CREW_EBUSY, -EBUSY);
    assert_int_equal(CREW_EPERM, -EPERM);
    assert_int_equal(CREW_EDEADLK, -EDEADLK);
    assert_int_equal(CREW_EOVERFLOW, -EOVERFLOW);
    assert_int_equal(CREW_EOWNERDEAD, -EOWNERDEAD);
    assert_int_equal(CREW_ECANCELED, -ECANCELED);
    assert_int_equal(CREW_ENOENT, -ENOENT);
    assert_int_equal(CREW_EEXIST, -EEXIST);
    assert_int_equal(CREW_ENAMETOOLONG, -ENAMETOOLONG);
    assert_int_equal(CREW_ENOSYS, -ENOSYS);
    assert_int_equal(CREW_EPIPE, -EPIPE);
    assert_int_equal(CREW_ECONNRESET, -ECONNRESET);
    assert_int_equal(CREW_EMSGSIZE, -EMSGSIZE);
    assert_int_equal(CREW_EPROTO, -EPROTO);
    assert_int_equal(CREW_EACCES, -EACCES);
    assert_int_equal(CREW_ESHUTDOWN, -ESHUTDOWN);
    assert_int_equal(CREW_ECHILD, -ECHILD);
    assert_int_equal(CREW_ECONNREFUSED, -ECONNREFUSED);
    assert_int_equal(CREW_EADDRINUSE, -EADDRINUSE);
    assert_int_equal(CREW_EMFILE, -EMFILE);
    assert_int_equal(CREW_ESRCH, -ESRCH);
    /* Every other code in the map is crew's own, at -4000 and below, clear
     * of errno: a new errno-like code belongs in the list above. */
    for (size_t i = 0; i < n_codes; i++)
        if (all_codes[i].code > -4000 && all_codes[i].code < -133)
            fail_msg("%s = %d is neither an errno nor below -4000", all_codes[i].name,
                     all_codes[i].code);
    /* crew's own conditions live at -4000 and below, clear of errno. */
    assert_true(CREW_EBROKEN <= -4000);
    assert_true(CREW_EFULL <= -4000);
    assert_true(CREW_EEMPTY <= -4000);
    assert_true(CREW_EWORKERDIED <= -4000);
    assert_true(CREW_EOF <= -4000);
}

static void test_unknown_codes(void **state) {
    (void)state;
    const int unknown[] = { -123456, -3999, -4000, 1, 4242, INT32_MIN };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_string_equal(crew_strerror(unknown[i]), "unknown error");
        assert_string_equal(crew_err_name(unknown[i]), "CREW_UNKNOWN");
    }
}

static void test_other_negative_errno_has_message(void **state) {
    (void)state;
    /* Any negative errno gets some message, never NULL. */
    const int others[] = { -EIO, -ENOSPC, -EROFS, -EBADF };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        const char *msg = crew_strerror(others[i]);
        assert_non_null(msg);
        assert_string_not_equal(msg, "");
        assert_non_null(crew_err_name(others[i]));
    }
}

/* The messages are static: concurrent callers see the same pointers. */
static void *strerror_worker(void *arg) {
    const char **seen = arg;
    for (int round = 0; round < 1000; round++)
        for (size_t i = 0; i < n_codes; i++)
            if (crew_strerror(all_codes[i].code) != seen[i])
                return (void *)1;
    return NULL;
}

static void test_strerror_thread_safe(void **state) {
    (void)state;
    const char *seen[n_codes];
    for (size_t i = 0; i < n_codes; i++)
        seen[i] = crew_strerror(all_codes[i].code);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, strerror_worker, seen), 0);
    for (int i = 0; i < 4; i++) {
        void *ret = (void *)2;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_message_and_name),
        cmocka_unit_test(test_codes_and_messages_distinct),
        cmocka_unit_test(test_codes_mirror_errno),
        cmocka_unit_test(test_unknown_codes),
        cmocka_unit_test(test_other_negative_errno_has_message),
        cmocka_unit_test(test_strerror_thread_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
