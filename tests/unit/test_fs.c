/* test_fs.c - the parts of fs/ testable without a mount: the one
 * status -> errno table and the -o option parser. Real mounts are
 * exercised by tests/pytest/fs. */
#include <errno.h>
#include <stdlib.h>

#include "fs.h"
#include "test.h"

TEST(errno_table)
{
    ASSERT_EQ(fs_status_errno(0), 0);
    ASSERT_EQ(fs_status_errno(100), -ENOENT);
    ASSERT_EQ(fs_status_errno(101), -ECANCELED);
    ASSERT_EQ(fs_status_errno(102), -EISDIR);
    ASSERT_EQ(fs_status_errno(104), -ENOTDIR);
    ASSERT_EQ(fs_status_errno(105), -EEXIST);
    ASSERT_EQ(fs_status_errno(106), -EPERM);
    ASSERT_EQ(fs_status_errno(107), -EROFS);
    ASSERT_EQ(fs_status_errno(108), -ENOTEMPTY);
    ASSERT_EQ(fs_status_errno(110), -EACCES);
    ASSERT_EQ(fs_status_errno(209), -EINVAL);
    ASSERT_EQ(fs_status_errno(300), -EIO);
    ASSERT_EQ(fs_status_errno(301), -EIO);
    ASSERT_EQ(fs_status_errno(401), -ERANGE);
    ASSERT_EQ(fs_status_errno(999), -EIO);
    /* Transport errors pass through. */
    ASSERT_EQ(fs_status_errno(-EIO), -EIO);
    ASSERT_EQ(fs_status_errno(-ECANCELED), -ECANCELED);
}

TEST(options)
{
    struct fs_options o;
    char *copy = NULL;

    fs_options_init(&o);
    ASSERT_STR_EQ(o.root, "/");
    ASSERT_EQ(o.file_mode, 0644);
    ASSERT_EQ(o.max_value, 1536 * 1024);
    ASSERT_EQ(o.keep_inodes, 65536);
    ASSERT(!o.quorum && !o.no_inotify && !o.ro);
    ASSERT_OK(fs_options_parse(&o, "uid=12,gid=34,mode=640,allow_other,ro,"
                                   "root=/config,max_value=99,timeout=0.5,"
                                   "noinotify,quorum,keep_inodes=7,"
                                   "leader_wait=2.5",
                               &copy));
    ASSERT_EQ(o.uid, 12);
    ASSERT_EQ(o.gid, 34);
    ASSERT_EQ(o.file_mode, 0640);
    ASSERT_EQ(o.dir_mode, 0750);
    ASSERT(o.allow_other);
    ASSERT(o.ro);
    ASSERT_STR_EQ(o.root, "/config");
    ASSERT_EQ(o.max_value, 99);
    ASSERT(o.attr_timeout == 0.5 && o.entry_timeout == 0.5);
    ASSERT(o.no_inotify);
    ASSERT(o.quorum);
    ASSERT_EQ(o.keep_inodes, 7);
    ASSERT_EQ(o.leader_wait_ms, 2500);
    free(copy);

    copy = NULL;
    ASSERT_EQ(fs_options_parse(&o, "bogus", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "uid=-1", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "mode=1777", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "mode=9", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "root=relative", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "timeout=x", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "timeout=", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "timeout=nan", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "timeout=-1", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "leader_wait=0", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "leader_wait=inf", &copy), -EINVAL);
    ASSERT_EQ(fs_options_parse(&o, "ro=1", &copy), -EINVAL);
    ASSERT(copy == NULL);
}

TEST_MAIN(TEST_ENTRY(errno_table), TEST_ENTRY(options))
